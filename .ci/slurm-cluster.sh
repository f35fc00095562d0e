#!/usr/bin/env bash
# A one-machine SLURM cluster on 127.0.0.1 for dlrun's `slurm` tests: munged, slurmctld and
# slurmd, every file (configuration, keys, state, logs, sockets) under one directory.
#
#   .ci/slurm-cluster.sh install          # apt-get install slurm-wlm munge (as root), if missing
#   .ci/slurm-cluster.sh start DIR        # start it; prints SLURM_CONF=DIR/slurm.conf
#   SLURM_CONF=DIR/slurm.conf sbatch ...  # use it (sbatch, squeue, scontrol, dlrun -m ...)
#   .ci/slurm-cluster.sh stop DIR         # stop it (the directory stays for its logs)
#
# It runs as root (slurmd must). Jobs run on the one node, "localnode", in partition "debug".
set -euo pipefail

command="${1:-}"
dir="${2:-}"

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

install() {
    if command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v munged >/dev/null; then
        return 0
    fi
    if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
        echo "slurm-cluster: SLURM is not installed and apt-get cannot install it here (needs root)" >&2
        return 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q slurm-wlm munge >/dev/null || { apt-get update -q >/dev/null && apt-get install -y -q slurm-wlm munge >/dev/null; }
}

start() {
    [ -n "$dir" ] || { echo "usage: $0 start DIR" >&2; exit 2; }
    for tool in munged slurmctld slurmd; do
        command -v "$tool" >/dev/null || { echo "slurm-cluster: $tool is not installed ($0 install)" >&2; exit 1; }
    done
    [ "$(id -u)" = 0 ] || { echo "slurm-cluster: slurmd runs as root; run this as root" >&2; exit 1; }
    dir="$(mkdir -p "$dir" && cd "$dir" && pwd)"
    mkdir -p "$dir/munge" "$dir/ctld" "$dir/spool" "$dir/log"
    chmod 700 "$dir/munge"

    # munge: its own key and socket, nothing in /etc or /run
    dd if=/dev/urandom of="$dir/munge/munge.key" bs=1024 count=1 status=none
    chmod 400 "$dir/munge/munge.key"
    munged --force --key-file="$dir/munge/munge.key" --socket="$dir/munge/munge.socket" \
        --pid-file="$dir/munge/munged.pid" --log-file="$dir/log/munged.log" \
        --seed-file="$dir/munge/munged.seed"

    local host cpus mem ctld_port d_port
    host="$(hostname -s)"
    cpus="$(nproc)"
    mem="$(awk '/MemTotal/ {print int($2 / 1024 / 2)}' /proc/meminfo)"  # half the machine, in MB
    ctld_port="$(free_port)"
    d_port="$(free_port)"
    cat >"$dir/slurm.conf" <<EOF
ClusterName=dlrun-test
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$d_port
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$dir/munge/munge.socket
CredType=cred/munge
StateSaveLocation=$dir/ctld
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$dir/log/jobcomp.txt
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
# short timers: a time limit, a requeue and a kill take seconds, not minutes
KillWait=5
MinJobAge=300
OverTimeLimit=0
InactiveLimit=0
SchedulerParameters=bf_interval=1,sched_min_interval=100000
MessageTimeout=10
SlurmctldTimeout=30
SlurmdTimeout=30
NodeName=localnode NodeAddr=127.0.0.1 NodeHostname=$host CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=localnode Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:4
EOF
    export SLURM_CONF="$dir/slurm.conf"
    slurmctld -i
    slurmd -N localnode
    for _ in $(seq 60); do
        if sinfo -h -n localnode -o %t 2>/dev/null | grep -qE '^(idle|mix|alloc)'; then
            echo "SLURM_CONF=$SLURM_CONF"
            return 0
        fi
        sleep 0.5
    done
    echo "slurm-cluster: the node did not come up; logs in $dir/log" >&2
    tail -n 20 "$dir/log/slurmctld.log" "$dir/log/slurmd.log" >&2 || true
    stop
    exit 1
}

stop() {
    [ -n "$dir" ] || { echo "usage: $0 stop DIR" >&2; exit 2; }
    local pidfile pid
    if [ -f "$dir/slurm.conf" ]; then  # jobs still running go first
        SLURM_CONF="$dir/slurm.conf" scancel --quiet --full --partition=debug 2>/dev/null || true
    fi
    for pidfile in "$dir/slurmd.pid" "$dir/slurmctld.pid" "$dir/munge/munged.pid"; do
        [ -f "$pidfile" ] || continue
        pid="$(cat "$pidfile")"
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
        kill -9 "$pid" 2>/dev/null || true
        rm -f "$pidfile"
    done
}

case "$command" in
    install) install ;;
    start) start ;;
    stop) stop ;;
    *) echo "usage: $0 install | start DIR | stop DIR" >&2; exit 2 ;;
esac
