"""Reads canaryd's Arrow export with pyarrow (a reader that is not ours) and
prints what it found as JSON, for TestArrowExportReadByPyarrow."""
import json
import sys

import pyarrow as pa
import pyarrow.ipc as ipc

with open(sys.argv[1], "rb") as f:
    table = ipc.open_stream(f).read_all()
meta = {k.decode(): v.decode() for k, v in (table.schema.metadata or {}).items()}
counts = {}
for version, kind, count in zip(table.column("version").to_pylist(), table.column("kind").to_pylist(),
                                table.column("count").to_pylist()):
    key = version + "/" + kind
    counts[key] = counts.get(key, 0) + count
spans = [(e - s).total_seconds() for s, e in zip(table.column("window_start").to_pylist(),
                                                 table.column("window_end").to_pylist())]
p95 = table.column("latency_p95_ms")
print(json.dumps({
    "pyarrow": pa.__version__,
    "rows": table.num_rows,
    "fields": table.schema.names,
    "types": [str(t) for t in table.schema.types],
    "meta": meta,
    "counts": counts,
    "max_span_s": max(spans) if spans else 0,
    "p95_non_null": len(p95) - p95.null_count,
}))
