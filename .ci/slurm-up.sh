#!/usr/bin/env bash
# A single-node SLURM on this machine: it is the controller and the only compute node (partition `debug`).
# For Debian/Ubuntu, run as root (apt, /etc, daemons started by hand: no systemd needed). Idempotent: does
# nothing when `sinfo` already answers. `.ci/run` calls it before the tests; docs/slurm.md's "Try it on one
# machine" uses it to rehearse the cluster commands.
set -euo pipefail

if command -v sinfo >/dev/null && timeout 10 sinfo --noheader >/dev/null 2>&1; then
    echo "slurm-up: SLURM already answers:"
    sinfo
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "slurm-up: run as root (it installs packages, writes /etc/slurm and starts daemons)." >&2
    exit 2
fi

if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v munged >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends slurmctld slurmd slurm-client munge >/dev/null
fi

# munge authenticates every SLURM message; it runs as the munge user with its own key.
if [ ! -s /etc/munge/munge.key ]; then
    mungekey --create --keyfile=/etc/munge/munge.key 2>/dev/null || dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
fi
chown munge:munge /etc/munge/munge.key
chmod 400 /etc/munge/munge.key
mkdir -p /run/munge /var/log/munge /var/lib/munge
chown munge:munge /run/munge /var/log/munge /var/lib/munge
if ! munge -n >/dev/null 2>&1; then
    runuser -u munge -- munged
    for _ in $(seq 50); do munge -n >/dev/null 2>&1 && break; sleep 0.2; done
fi

host=$(hostname -s)
cpus=$(nproc)
# Leave ~10% of the memory to the system: a node that reports less than RealMemory is drained.
mem_mb=$(awk '/MemTotal/ {printf "%d", $2 / 1024 * 0.9}' /proc/meminfo)
mkdir -p /etc/slurm /var/lib/slurm/slurmctld /var/lib/slurm/slurmd /var/log/slurm /run/slurm
cat >/etc/slurm/slurm.conf <<EOF
# Written by radio-curation's .ci/slurm-up.sh: one machine as controller and only node.
ClusterName=local
SlurmctldHost=${host}
SlurmUser=root
AuthType=auth/munge
StateSaveLocation=/var/lib/slurm/slurmctld
SlurmdSpoolDir=/var/lib/slurm/slurmd
SlurmctldPidFile=/run/slurm/slurmctld.pid
SlurmdPidFile=/run/slurm/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SwitchType=switch/none
MpiDefault=none
SelectType=select/cons_tres
# Each CPU (not each core) is allocatable, and memory is a consumable resource: two 1-CPU jobs run side by side.
SelectTypeParameters=CR_CPU_Memory
SlurmdParameters=config_overrides
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
ReturnToService=2
# Finished jobs stay visible to squeue/scontrol for 10 minutes (submitit polls their state).
MinJobAge=600
SchedulerType=sched/backfill
NodeName=${host} CPUs=${cpus} RealMemory=${mem_mb} State=UNKNOWN
PartitionName=debug Nodes=${host} Default=YES MaxTime=INFINITE State=UP
EOF

pgrep -x slurmctld >/dev/null || slurmctld
pgrep -x slurmd >/dev/null || slurmd
for _ in $(seq 60); do
    if sinfo --noheader --states=idle,mixed,allocated 2>/dev/null | grep -q debug; then
        sinfo
        exit 0
    fi
    sleep 1
done
echo "slurm-up: SLURM did not come up; see /var/log/slurm/slurmctld.log and /var/log/slurm/slurmd.log" >&2
sinfo >&2 || true
exit 1
