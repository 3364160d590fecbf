package sink

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// StateTopic carries partition checkpoints between instances: when a
// partition is revoked (a rebalance, a rolling restart), its owner publishes
// the checkpoint — open windows, offsets and the state of the judges of its
// rollouts — and the next owner, whose disk does not have it, continues from
// there instead of replaying from the commit with its judges' evidence lost.
// The topic is compacted with key "<group>/<topic>/<partition>": only each
// partition's latest handover is kept.
type StateTopic struct {
	cl    *kgo.Client // producer (no consumer group)
	topic string
	group string
	opts  []kgo.Opt // to build readers
}

// NewStateTopic returns a StateTopic producing with cl; readers are built
// from opts (seed brokers, TLS, SASL).
func NewStateTopic(cl *kgo.Client, topic, group string, opts ...kgo.Opt) *StateTopic {
	return &StateTopic{cl: cl, topic: topic, group: group, opts: opts}
}

// StateTopicSpec is the state topic's spec for creation: compacted, records
// up to 16 MB (a handover larger than the producer's batch limit is not
// published; the next owner then replays from the commit).
func StateTopicSpec(name string) TopicSpec {
	return TopicSpec{Name: name, Partitions: 1, Purpose: "partition checkpoints handed over between instances (key = group/topic/partition)",
		Configs: map[string]*string{"cleanup.policy": ptr("compact"), "max.message.bytes": ptr("16777216")}}
}

func (s *StateTopic) key(topic string, p int32) string {
	return s.group + "/" + topic + "/" + strconv.Itoa(int(p))
}

// Publish writes a partition's handover and waits for the broker's ack.
func (s *StateTopic) Publish(ctx context.Context, topic string, p int32, value []byte) error {
	r := &kgo.Record{Topic: s.topic, Key: []byte(s.key(topic, p)), Value: value}
	if err := s.cl.ProduceSync(ctx, r).FirstErr(); err != nil {
		return fmt.Errorf("publish checkpoint of %s/%d to %s: %w", topic, p, s.topic, err)
	}
	return nil
}

// Fetch reads the state topic to its end and returns the latest handover of
// each of the given partitions of topic that has one.
func (s *StateTopic) Fetch(ctx context.Context, topic string, ps []int32) (map[int32][]byte, error) {
	want := map[string]int32{}
	for _, p := range ps {
		want[s.key(topic, p)] = p
	}
	rd, err := kgo.NewClient(append(s.opts, kgo.ConsumeTopics(s.topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchMaxPartitionBytes(32<<20))...)
	if err != nil {
		return nil, fmt.Errorf("read state topic: %w", err)
	}
	defer rd.Close()
	// A state topic created at this start has no leaders for a moment:
	// its retriable errors are waited out (within ctx), not reported.
	ends, err := endOffsets(ctx, rd, s.topic)
	for err != nil && kerr.IsRetriable(err) {
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("read state topic: %w", err)
		case <-time.After(100 * time.Millisecond):
		}
		ends, err = endOffsets(ctx, rd, s.topic)
	}
	if err != nil {
		return nil, err
	}
	out := map[int32][]byte{}
	remaining := 0
	for _, e := range ends {
		if e > 0 {
			remaining++
		}
	}
	for remaining > 0 {
		fs := rd.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("read state topic: %w", err)
		}
		var ferr error
		fs.EachError(func(_ string, _ int32, err error) { ferr = errors.Join(ferr, err) })
		if ferr != nil {
			return nil, fmt.Errorf("read state topic: %w", ferr)
		}
		fs.EachRecord(func(r *kgo.Record) {
			if p, ok := want[string(r.Key)]; ok {
				if r.Value == nil {
					delete(out, p)
				} else {
					out[p] = r.Value
				}
			}
			if r.Offset+1 == ends[r.Partition] {
				remaining--
			}
		})
	}
	return out, nil
}
