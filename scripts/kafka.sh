#!/usr/bin/env bash
# kafka.sh runs a real single-node Apache Kafka 4.x broker (KRaft, broker and
# controller in one process) on 127.0.0.1 for tests and benchmarks. The jars
# come from Maven Central through loadtest/kafka/pom.xml; no tarball download.
#
#   scripts/kafka.sh fetch           fetch the broker's jars into the cache (idempotent)
#   scripts/kafka.sh start [DIR]     format fresh storage in DIR (default: a new temp dir),
#                                    start the broker, wait until it answers, and print
#                                      KAFKA_BROKERS=127.0.0.1:PORT           PLAINTEXT
#                                      KAFKA_VERSION=4.4.0
#                                      KAFKA_DIR=DIR
#                                      KAFKA_SASL_SSL_BROKERS=127.0.0.1:PORT  SASL_SSL
#                                      KAFKA_MTLS_BROKERS=127.0.0.1:PORT      SSL, client certificate required
#                                      KAFKA_TLS_DIR=DIR/tls
#                                      KAFKA_SASL_USER=canaryd
#                                      KAFKA_SASL_PASSWORD=canaryd-secret
#                                    on stdout (all other output goes to stderr)
#   scripts/kafka.sh stop DIR        SIGTERM, wait up to 30 s, SIGKILL; remove the data (all of
#                                    DIR if start made it, else all but kafka.log)
#   scripts/kafka.sh kill DIR [SIG]  stop the broker, keeping data, ports and config, for a later
#                                    restart: SIG KILL (the default) crashes it, SIG TERM shuts it
#                                    down cleanly (SIGKILL after 30 s)
#   scripts/kafka.sh restart DIR     stop the broker if it runs (SIGTERM, then SIGKILL),
#                                    keep data and ports, start it again and wait until it answers
#   scripts/kafka.sh status DIR      exit 0 if the broker of DIR runs
#
# Listeners, all on 127.0.0.1 (inter-broker and controller traffic stays PLAINTEXT):
#   PLAINTEXT  KAFKA_BROKERS: no security, what every test uses unless it tests security
#   SASL_SSL   KAFKA_SASL_SSL_BROKERS: TLS (server certificate only) and SASL with
#              PLAIN and SCRAM-SHA-256/512 for user KAFKA_SASL_USER with password
#              KAFKA_SASL_PASSWORD (SCRAM credentials are written at format time,
#              PLAIN's in the listener's JAAS config), and OAUTHBEARER with Kafka's
#              built-in unsecured validator: it accepts any unsigned JWT
#              (header {"alg":"none"}) with a "sub" and an "exp" in the future
#   SSL        KAFKA_MTLS_BROKERS: TLS with a client certificate signed by the CA required
# KAFKA_TLS_DIR holds PEM files made with openssl at each start: ca.pem (the CA that
# signs the broker's and the client's certificates), client.pem and client.key (a
# client certificate, CN=canaryd-client), broker.pem and broker.key (SANs 127.0.0.1
# and localhost), broker-keystore.pem (key and chain, the broker's PEM keystore).
#
# Files in DIR: server.properties, log4j2.properties, data/ (log.dirs and the
# KRaft metadata log), kafka.log (the broker's log), pid, brokers
# (KAFKA_BROKERS=...), env (the variables start prints: sourceable), tls/,
# version, watchdog.pid (see KAFKA_OWNER_PID).
#
# Environment:
#   CANARYD_CACHE          cache root (default $HOME/.cache/canaryd); jars land in
#                          $CANARYD_CACHE/kafka-<version>/libs
#   KAFKA_VERSION          Kafka version to fetch/run (default: 4.4.0, falling back to 4.3.1)
#   KAFKA_HEAP_OPTS        JVM heap flags (default -Xms256m -Xmx512m)
#   KAFKA_JVM_OPTS         extra JVM flags
#   KAFKA_START_TIMEOUT    seconds to wait for the broker to answer (default 90)
#   KAFKA_STOP_TIMEOUT     seconds between SIGTERM and SIGKILL (default 30)
#   KAFKA_OWNER_PID        if set, start also runs a watchdog that stops the broker and
#                          removes its data when that process exits, so a test process
#                          that dies without cleaning up leaks no broker
#   JAVA_HOME / JAVA       Java 17 or newer
# Needs openssl (for the TLS listeners' certificates).
set -euo pipefail

readonly DEFAULT_VERSIONS=(4.4.0 4.3.1) # the first is preferred; later ones are fallbacks
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
readonly ROOT
readonly SELF="$ROOT/scripts/kafka.sh"
readonly POM="$ROOT/loadtest/kafka/pom.xml"
readonly CACHE="${CANARYD_CACHE:-$HOME/.cache/canaryd}"
readonly START_TIMEOUT="${KAFKA_START_TIMEOUT:-90}"
readonly STOP_TIMEOUT="${KAFKA_STOP_TIMEOUT:-30}"
# The one SASL user of the SASL_SSL listener (a throwaway local broker: the
# password is no secret, and start prints it).
readonly SASL_USER=canaryd
readonly SASL_PASSWORD=canaryd-secret

log() { printf 'kafka.sh: %s\n' "$*" >&2; }
die() {
	log "error: $*"
	exit 1
}
now() { printf '%s' "$EPOCHREALTIME"; }
since() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1fs", b - a }'; }

java_bin() {
	if [[ -n "${JAVA:-}" ]]; then
		printf '%s' "$JAVA"
	elif [[ -n "${JAVA_HOME:-}" ]]; then
		printf '%s' "$JAVA_HOME/bin/java"
	else
		command -v java || die "java not found: install a JDK 17+ or set JAVA_HOME"
	fi
}

libs_dir() { printf '%s/kafka-%s/libs' "$CACHE" "$1"; }

# pom_sum identifies the pom that filled a cache folder, so editing the pom refetches.
pom_sum() { sha256sum "$POM" | cut -d' ' -f1; }

cached() {
	local libs
	libs="$(libs_dir "$1")"
	[[ -f "$libs/.complete" && "$(cat "$libs/.complete")" == "$(pom_sum)" ]]
}

# fetch_version copies the jars of one Kafka version into the cache. It fills a
# temporary folder and renames it, so an interrupted fetch leaves nothing that
# looks complete; a lock keeps parallel test processes from fetching together.
fetch_version() {
	local version="$1" libs tmp lock
	libs="$(libs_dir "$version")"
	cached "$version" && return 0
	mkdir -p "$(dirname "$libs")"
	exec {lock}>"$(dirname "$libs")/.lock"
	if command -v flock >/dev/null; then
		flock "$lock"
	fi
	if cached "$version"; then
		exec {lock}>&-
		return 0
	fi
	command -v mvn >/dev/null || die "mvn not found: install Maven 3.8+"
	tmp="$libs.tmp.$$"
	rm -rf "$tmp"
	log "fetching org.apache.kafka:kafka_2.13:$version with Maven"
	# Maven 3.8 prints bare colour resets even in batch mode; strip them.
	if ! mvn -q -B -Dstyle.color=never -f "$POM" -Dkafka.version="$version" \
		dependency:copy-dependencies -DoutputDirectory="$tmp" 2>&1 |
		sed 's/\x1b\[[0-9;]*m//g; /^$/d' >&2; then
		rm -rf "$tmp"
		exec {lock}>&-
		return 1
	fi
	[[ -f "$tmp/kafka_2.13-$version.jar" ]] || {
		rm -rf "$tmp"
		exec {lock}>&-
		die "maven finished but $tmp/kafka_2.13-$version.jar is missing"
	}
	pom_sum >"$tmp/.complete"
	rm -rf "$libs"
	mv "$tmp" "$libs"
	exec {lock}>&-
}

# resolve_version prints the version to run: KAFKA_VERSION if set, else the
# first default that is cached or fetches.
resolve_version() {
	local v
	if [[ -n "${KAFKA_VERSION:-}" ]]; then
		fetch_version "$KAFKA_VERSION" || die "could not fetch Kafka $KAFKA_VERSION"
		printf '%s' "$KAFKA_VERSION"
		return
	fi
	for v in "${DEFAULT_VERSIONS[@]}"; do
		if cached "$v"; then
			printf '%s' "$v"
			return
		fi
	done
	for v in "${DEFAULT_VERSIONS[@]}"; do
		if fetch_version "$v"; then
			printf '%s' "$v"
			return
		fi
		log "Kafka $v could not be fetched; trying the next version"
	done
	die "could not fetch any of Kafka ${DEFAULT_VERSIONS[*]}"
}

cmd_fetch() {
	local t0 v
	t0="$(now)"
	v="$(resolve_version)"
	log "Kafka $v jars in $(libs_dir "$v") ($(since "$t0"))"
}

# port_free reports whether nothing listens on 127.0.0.1:$1.
port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# pick_port prints a free loopback port below the kernel's ephemeral range,
# so outgoing connections cannot take it between now and the broker's bind;
# it is none of the ports given as arguments.
pick_port() {
	local p q i taken
	for ((i = 0; i < 200; i++)); do
		p=$((20000 + RANDOM % 12000))
		taken=0
		for q in "$@"; do [[ "$p" == "$q" ]] && taken=1; done
		if ((!taken)) && port_free "$p"; then
			printf '%s' "$p"
			return
		fi
	done
	die "no free loopback port found"
}

# make_tls writes a CA, the broker's certificate and a client certificate, all
# PEM, into DIR/tls (see the header). EC P-256 keys, PKCS#8, unencrypted.
make_tls() {
	local tls="$1/tls" ext
	command -v openssl >/dev/null || die "openssl not found: it makes the TLS listeners' certificates (Debian: apt-get install openssl)"
	rm -rf "$tls"
	mkdir -p "$tls"
	ext="$tls/ext.cnf"
	{
		openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
			-keyout "$tls/ca.key" -out "$tls/ca.pem" -subj "/CN=canaryd test CA" \
			-addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"
		openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
			-keyout "$tls/broker.key" -out "$tls/broker.csr" -subj "/CN=localhost"
		printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n' >"$ext"
		openssl x509 -req -in "$tls/broker.csr" -CA "$tls/ca.pem" -CAkey "$tls/ca.key" \
			-set_serial "0x$(openssl rand -hex 8)" -days 30 -extfile "$ext" -out "$tls/broker.pem"
		openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
			-keyout "$tls/client.key" -out "$tls/client.csr" -subj "/CN=canaryd-client"
		printf 'extendedKeyUsage=clientAuth\n' >"$ext"
		openssl x509 -req -in "$tls/client.csr" -CA "$tls/ca.pem" -CAkey "$tls/ca.key" \
			-set_serial "0x$(openssl rand -hex 8)" -days 30 -extfile "$ext" -out "$tls/client.pem"
	} >>"$1/kafka.log" 2>&1 || die "openssl failed making the certificates; see $1/kafka.log"
	cat "$tls/broker.key" "$tls/broker.pem" "$tls/ca.pem" >"$tls/broker-keystore.pem"
	rm -f "$tls/broker.csr" "$tls/client.csr" "$ext"
}

# random_cluster_id prints a Kafka Uuid: 16 random bytes, URL-safe base64, no padding.
# It never starts with '-': kafka-storage format would read it as an option.
random_cluster_id() {
	local id
	while :; do
		id=$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n')
		[[ $id == -* ]] || break
	done
	printf '%s' "$id"
}

# running_pid prints the pid of DIR's broker if it runs.
running_pid() {
	local dir="$1" pid
	[[ -f "$dir/pid" ]] || return 1
	pid="$(cat "$dir/pid")"
	[[ -n "$pid" ]] || return 1
	# The pid must still be our broker, not a recycled pid.
	tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF "$dir/server.properties" || return 1
	printf '%s' "$pid"
}

write_config() {
	local dir="$1" bport="$2" cport="$3" sport="$4" mport="$5"
	cat >"$dir/server.properties" <<EOF
# Written by scripts/kafka.sh: one KRaft node that is both broker and controller.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$cport
listeners=PLAINTEXT://127.0.0.1:$bport,SASL_SSL://127.0.0.1:$sport,SSL://127.0.0.1:$mport,CONTROLLER://127.0.0.1:$cport
advertised.listeners=PLAINTEXT://127.0.0.1:$bport,SASL_SSL://127.0.0.1:$sport,SSL://127.0.0.1:$mport
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,SASL_SSL:SASL_SSL,SSL:SSL
log.dirs=$dir/data

# TLS of the SASL_SSL and SSL listeners: PEM files from make_tls. SSL requires a
# client certificate signed by the CA (mTLS).
ssl.keystore.type=PEM
ssl.keystore.location=$dir/tls/broker-keystore.pem
ssl.truststore.type=PEM
ssl.truststore.location=$dir/tls/ca.pem
listener.name.ssl.ssl.client.auth=required
# SASL on SASL_SSL. SCRAM credentials are in the metadata log (written at format);
# OAUTHBEARER without a validator class uses Kafka's unsecured JWS validator.
sasl.enabled.mechanisms=PLAIN,SCRAM-SHA-256,SCRAM-SHA-512,OAUTHBEARER
listener.name.sasl_ssl.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required user_$SASL_USER="$SASL_PASSWORD";
listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_ssl.oauthbearer.sasl.jaas.config=org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule required unsecuredLoginStringClaim_sub="kafka";

# Fast tests on one node: no replication, no rebalance delay, few internal partitions.
num.partitions=3
default.replication.factor=1
auto.create.topics.enable=true
offsets.topic.replication.factor=1
offsets.topic.num.partitions=3
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=3
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
# After a crash (kill) the restarted broker cannot register until the controller
# expires its old session: 9 s by default, 4 s here.
broker.heartbeat.interval.ms=1000
broker.session.timeout.ms=4000
# log.flush.* stay at their defaults: the OS page cache decides, as in production.
EOF
	cat >"$dir/log4j2.properties" <<'EOF'
status = warn
appender.out.type = Console
appender.out.name = OUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.out.ref = OUT
logger.statechange.name = state.change.logger
logger.statechange.level = WARN
logger.request.name = kafka.request.logger
logger.request.level = WARN
EOF
}

# all_bound reports whether something listens on each of the given loopback ports.
all_bound() {
	local p
	for p in "$@"; do
		port_free "$p" && return 1
	done
	return 0
}

# launch starts the broker of DIR in the background and waits until it
# answers. It returns 1 and leaves no process behind if it does not.
launch() {
	local dir="$1" version="$2" libs java pid bport ports p deadline
	libs="$(libs_dir "$version")"
	java="$(java_bin)"
	bport="$(sed -n 's/^advertised.listeners=PLAINTEXT:\/\/127.0.0.1:\([0-9]*\).*$/\1/p' "$dir/server.properties")"
	ports="$(sed -n 's/^advertised.listeners=//p' "$dir/server.properties" | grep -o ':[0-9]*' | tr -d ':')"
	# The flags kafka-run-class.sh uses, with a small heap.
	# shellcheck disable=SC2086 # word splitting of the option variables is intended
	"$java" ${KAFKA_HEAP_OPTS:--Xms256m -Xmx512m} \
		-server -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35 \
		-XX:+ExplicitGCInvokesConcurrent -Djava.awt.headless=true \
		-Dlog4j2.configurationFile="$dir/log4j2.properties" -Dkafka.logs.dir="$dir" \
		${KAFKA_JVM_OPTS:-} \
		-cp "$libs/*" kafka.Kafka "$dir/server.properties" \
		</dev/null >>"$dir/kafka.log" 2>&1 &
	pid=$!
	echo "$pid" >"$dir/pid"
	deadline=$((SECONDS + START_TIMEOUT))
	until grep -q "Kafka Server started" "$dir/kafka.log" && all_bound $ports; do
		if ! kill -0 "$pid" 2>/dev/null; then
			log "broker exited during start; last lines of $dir/kafka.log:"
			tail -n 30 "$dir/kafka.log" >&2 || true
			rm -f "$dir/pid"
			return 1
		fi
		if ((SECONDS >= deadline)); then
			log "broker did not answer within ${START_TIMEOUT}s; last lines of $dir/kafka.log:"
			tail -n 30 "$dir/kafka.log" >&2 || true
			terminate "$dir" || true
			return 1
		fi
		sleep 0.2
	done
	if command -v kcat >/dev/null; then
		until kcat -L -b "127.0.0.1:$bport" -m 5 2>/dev/null | grep -q "1 brokers"; do
			if ((SECONDS >= deadline)) || ! kill -0 "$pid" 2>/dev/null; then
				log "broker started but kcat -L -b 127.0.0.1:$bport does not answer"
				terminate "$dir" || true
				return 1
			fi
			sleep 0.2
		done
	fi
}

# terminate stops DIR's broker: SIGTERM, up to STOP_TIMEOUT seconds, SIGKILL.
terminate() {
	local dir="$1" pid deadline
	pid="$(running_pid "$dir")" || {
		rm -f "$dir/pid"
		return 0
	}
	kill -TERM "$pid" 2>/dev/null || true
	deadline=$((SECONDS + STOP_TIMEOUT))
	while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do
		sleep 0.2
	done
	if kill -0 "$pid" 2>/dev/null; then
		log "broker $pid did not stop within ${STOP_TIMEOUT}s; sending SIGKILL"
		kill -KILL "$pid" 2>/dev/null || true
		while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
	fi
	rm -f "$dir/pid"
}

# start_watchdog stops the broker when KAFKA_OWNER_PID exits. It runs detached
# from our stdout and stderr so whoever reads them sees EOF when we return.
start_watchdog() {
	local dir="$1" owner="${KAFKA_OWNER_PID:-}"
	[[ -n "$owner" ]] || return 0
	kill -0 "$owner" 2>/dev/null || die "KAFKA_OWNER_PID=$owner does not run"
	(
		while kill -0 "$owner" 2>/dev/null && [[ -f "$dir/watchdog.pid" ]]; do sleep 1; done
		if [[ -f "$dir/watchdog.pid" ]]; then
			KAFKA_FROM_WATCHDOG=1 "$SELF" stop "$dir"
		fi
	) </dev/null >>"$dir/watchdog.log" 2>&1 &
	echo $! >"$dir/watchdog.pid"
}

report() {
	local dir="$1"
	cat "$dir/env"
}

cmd_start() {
	local dir="${1:-}" owned=0 t0 version id bport cport sport mport pid attempt
	t0="$(now)"
	if [[ -z "$dir" ]]; then
		dir="$(mktemp -d "${TMPDIR:-/tmp}/canaryd-kafka.XXXXXX")"
		owned=1
	fi
	mkdir -p "$dir"
	dir="$(cd "$dir" && pwd)"
	if pid="$(running_pid "$dir")"; then
		log "broker $pid already runs in $dir"
		report "$dir"
		return 0
	fi
	version="$(resolve_version)"

	# From here on a failure removes what this start made.
	# shellcheck disable=SC2064 # expand now: the trap must remember this dir
	trap "cleanup_failed_start '$dir' $owned" EXIT
	for attempt in 1 2 3; do
		cleanup_data "$dir"
		: >"$dir/kafka.log"
		if ((owned)); then touch "$dir/.owned"; fi
		bport="$(pick_port)"
		cport="$(pick_port "$bport")"
		sport="$(pick_port "$bport" "$cport")"
		mport="$(pick_port "$bport" "$cport" "$sport")"
		write_config "$dir" "$bport" "$cport" "$sport" "$mport"
		make_tls "$dir"
		id="$(random_cluster_id)"
		if ! "$(java_bin)" -Dlog4j2.configurationFile="$dir/log4j2.properties" \
			-cp "$(libs_dir "$version")/*" kafka.tools.StorageTool format \
			-t "$id" -c "$dir/server.properties" --ignore-formatted \
			--add-scram "SCRAM-SHA-256=[name=$SASL_USER,password=$SASL_PASSWORD]" \
			--add-scram "SCRAM-SHA-512=[name=$SASL_USER,password=$SASL_PASSWORD]" >>"$dir/kafka.log" 2>&1; then
			tail -n 30 "$dir/kafka.log" >&2 || true
			die "kafka-storage format failed; see $dir/kafka.log"
		fi
		if launch "$dir" "$version"; then
			break
		fi
		if ((attempt < 3)) && grep -q "Address already in use" "$dir/kafka.log"; then
			log "port taken between picking and binding; retrying with new ports"
			continue
		fi
		die "broker did not start; see $dir/kafka.log"
	done
	printf 'KAFKA_BROKERS=127.0.0.1:%s\n' "$bport" >"$dir/brokers"
	printf '%s\n' "$version" >"$dir/version"
	{
		cat "$dir/brokers"
		printf 'KAFKA_VERSION=%s\n' "$version"
		printf 'KAFKA_DIR=%s\n' "$dir"
		printf 'KAFKA_SASL_SSL_BROKERS=127.0.0.1:%s\n' "$sport"
		printf 'KAFKA_MTLS_BROKERS=127.0.0.1:%s\n' "$mport"
		printf 'KAFKA_TLS_DIR=%s\n' "$dir/tls"
		printf 'KAFKA_SASL_USER=%s\n' "$SASL_USER"
		printf 'KAFKA_SASL_PASSWORD=%s\n' "$SASL_PASSWORD"
	} >"$dir/env"
	start_watchdog "$dir"
	trap - EXIT
	log "Kafka $version (KRaft, broker+controller) on 127.0.0.1:$bport, SASL_SSL 127.0.0.1:$sport, mTLS 127.0.0.1:$mport, controller 127.0.0.1:$cport, pid $(cat "$dir/pid"), dir $dir; started in $(since "$t0")"
	report "$dir"
}

# cleanup_failed_start is the EXIT trap of a start that did not finish.
cleanup_failed_start() {
	local dir="$1" owned="$2"
	terminate "$dir" || true
	if ((owned)); then
		# Keep the log of a failed start for whoever debugs it.
		[[ -f "$dir/kafka.log" ]] && cp "$dir/kafka.log" "${dir}.failed.log" 2>/dev/null &&
			log "broker log kept in ${dir}.failed.log"
		rm -rf "$dir"
	else
		cleanup_data "$dir"
	fi
}

# cleanup_data removes what start wrote into DIR except kafka.log.
cleanup_data() {
	local dir="$1"
	rm -rf "$dir/data" "$dir/tls" "$dir/pid" "$dir/brokers" "$dir/env" "$dir/version" \
		"$dir/server.properties" "$dir/log4j2.properties" "$dir/watchdog.pid" "$dir/.owned"
}

need_dir() {
	[[ -n "${1:-}" ]] || die "usage: kafka.sh $2 DIR"
}

stop_watchdog() {
	local dir="$1" wpid
	[[ -f "$dir/watchdog.pid" ]] || return 0
	wpid="$(cat "$dir/watchdog.pid")"
	rm -f "$dir/watchdog.pid" # also tells the watchdog loop to end
	if [[ -z "${KAFKA_FROM_WATCHDOG:-}" && -n "$wpid" ]]; then
		kill "$wpid" 2>/dev/null || true
	fi
}

cmd_stop() {
	local dir="${1:-}" t0
	need_dir "$dir" stop
	[[ -d "$dir" ]] || return 0
	dir="$(cd "$dir" && pwd)"
	t0="$(now)"
	stop_watchdog "$dir"
	terminate "$dir"
	if [[ -f "$dir/.owned" ]]; then
		rm -rf "$dir"
	else
		cleanup_data "$dir"
	fi
	log "stopped the broker of $dir and removed its data ($(since "$t0"))"
}

cmd_kill() {
	local dir="${1:-}" sig="${2:-KILL}" pid
	need_dir "$dir" "kill"
	dir="$(cd "$dir" && pwd)"
	case "$sig" in
	KILL)
		if pid="$(running_pid "$dir")"; then
			kill -KILL "$pid" 2>/dev/null || true
			while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
			log "killed broker $pid (SIGKILL); data and ports kept in $dir"
		fi
		rm -f "$dir/pid"
		;;
	TERM)
		terminate "$dir"
		log "stopped the broker (SIGTERM); data and ports kept in $dir"
		;;
	*) die "kill $dir $sig: want TERM or KILL" ;;
	esac
}

cmd_restart() {
	local dir="${1:-}" t0 version
	need_dir "$dir" restart
	dir="$(cd "$dir" && pwd)"
	[[ -f "$dir/server.properties" && -f "$dir/version" ]] ||
		die "$dir holds no broker made by kafka.sh start"
	t0="$(now)"
	terminate "$dir"
	version="$(cat "$dir/version")"
	launch "$dir" "$version" || die "broker did not restart; see $dir/kafka.log"
	log "restarted Kafka $version in $dir, pid $(cat "$dir/pid") ($(since "$t0"))"
	report "$dir"
}

cmd_status() {
	local dir="${1:-}"
	need_dir "$dir" status
	dir="$(cd "$dir" 2>/dev/null && pwd)" || return 1
	running_pid "$dir" >/dev/null
}

main() {
	local cmd="${1:-}"
	shift || true
	case "$cmd" in
	fetch) cmd_fetch "$@" ;;
	start) cmd_start "$@" ;;
	stop) cmd_stop "$@" ;;
	kill) cmd_kill "$@" ;;
	restart) cmd_restart "$@" ;;
	status) cmd_status "$@" ;;
	*)
		sed -n '2,/^set -euo/p' "$SELF" | sed '$d; s/^# \{0,1\}//' >&2
		exit 2
		;;
	esac
}

main "$@"
