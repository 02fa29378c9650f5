"""`python -m fastres.distributed.emulate`: run a job across emulated hosts with throttled links (as root).

    # 4 hosts x 2 ranks, 1 Gbit/s per host link: fastres.train runs unchanged (torchrun's variables)
    python -m fastres.distributed.emulate --hosts 4 --ranks-per-host 2 --link-gbit 1 -- \\
        python -m fastres.train --threads 1 --epochs 1

    # torchrun on every host ({host}: the host's index, {master}: the first host's address)
    python -m fastres.distributed.emulate --hosts 2 --each host -- torchrun --nnodes 2 --node-rank {host} \\
        --nproc-per-node 2 --master-addr {master} --master-port 29500 -m fastres.train --threads 1

    # mpirun on the first host starts the rest through the emulation's ssh stand-in
    python -m fastres.distributed.emulate --hosts 2 --each job -- sh -c 'mpirun --allow-run-as-root \\
        --mca plm_rsh_agent $FASTRES_EMU_RSH --host fastres-h0:2,fastres-h1:2 -x MASTER_ADDR python -m fastres.train'

    python -m fastres.distributed.emulate --cleanup      # remove what a killed emulation left behind

Hosts are network namespaces on one bridge with addresses from 198.18.0.0/15 (RFC 2544's
benchmarking range) and no route out; each host's link is shaped with tc in both directions.
Everything made is removed on exit, on failure, on Ctrl-C and on SIGTERM, and the job is
stopped after --timeout seconds. Exit status: the job's; 2 for bad input or a machine that
cannot emulate (not root, no `ip`/`tc`, no netem for --delay-ms); 124 on timeout; 130 on Ctrl-C.
"""

from __future__ import annotations

import argparse
import signal
import sys

import fastres
from fastres import FastresError
from fastres.distributed.emulate.network import EmulatedNetwork, sweep_stale
from fastres.distributed.emulate.processes import EACH, PLACEMENTS, run_on_hosts

PROG = "python -m fastres.distributed.emulate"


class _Stopped(Exception):
    """SIGTERM or SIGHUP: leave through the same clean-up path as Ctrl-C."""


def build_parser() -> argparse.ArgumentParser:
    p = fastres.ArgumentParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("hosts and links")
    g.add_argument("--hosts", type=int, default=2, help="emulated hosts (network namespaces), 1..250 (default 2)")
    g.add_argument("--link-gbit", type=float, default=1.0, help="each host link's rate, Gbit/s each way (default 1)")
    g.add_argument("--unshaped", action="store_true", help="no rate limit on the links (veth speed)")
    g.add_argument(
        "--delay-ms", type=float, default=0.0,
        help="one-way latency added between two hosts, ms (default 0; needs the kernel's netem qdisc)",
    )  # fmt: skip
    g = p.add_argument_group("the job")
    g.add_argument("--ranks-per-host", type=int, default=1, help="processes per host with --each rank (default 1)")
    g.add_argument(
        "--each", choices=EACH, default="rank",
        help="rank: the command once per rank, torchrun's variables set (default); host: once per host; "
        "job: once, on the first host",
    )  # fmt: skip
    g.add_argument(
        "--placement", choices=PLACEMENTS, default="block",
        help="--each rank: block (host h runs ranks h*M..h*M+M-1, default) or cyclic (host h runs h, h+K, ...)",
    )  # fmt: skip
    g.add_argument("--port", type=int, default=29500, help="MASTER_PORT on the first host (default 29500)")
    g.add_argument("--timeout", type=float, default=900.0, help="seconds before the job is stopped (default 900)")
    g.add_argument("--grace", type=float, default=10.0, help="seconds the others get after one process fails")
    g.add_argument("--log-dir", help="write each process's output to LOG_DIR/rankN.log (or hostN.log)")
    g.add_argument("--cleanup", action="store_true", help="only remove namespaces left by emulations that died")
    p.add_argument("command", nargs=argparse.REMAINDER, help="the command, after --")
    return p


def _raise_stopped(signum, frame):
    raise _Stopped(signal.Signals(signum).name)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cmd = args.command[1:] if args.command[:1] == ["--"] else args.command
    say = lambda *a: print(*a, file=sys.stderr, flush=True)
    if args.cleanup:
        removed = sweep_stale()
        say(f"{PROG}: removed {len(removed)} stale namespaces" + (f": {', '.join(removed)}" if removed else ""))
        return 0
    if not cmd:
        say(f"{PROG}: error: no command to run: put it after -- (see --help)")
        return 2
    # SIGINT too: a job started in the background inherits it ignored, and the emulation must
    # still stop and remove its namespaces when one arrives (kill -INT, Ctrl-C after fg)
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _raise_stopped)
    net = None
    try:
        net = EmulatedNetwork(args.hosts, None if args.unshaped else args.link_gbit, args.delay_ms)
        net.open()
        say(f"{PROG}: {net.describe()}")
        return run_on_hosts(
            net, cmd, each=args.each, ranks_per_host=args.ranks_per_host, placement=args.placement, port=args.port,
            timeout=args.timeout, grace=args.grace, log_dir=args.log_dir, say=say,
        )  # fmt: skip
    except FastresError as e:
        say(f"{PROG}: error: {e}")
        return 2
    except (KeyboardInterrupt, _Stopped) as e:
        say(f"{PROG}: interrupted ({e or 'SIGINT'}): stopping the job and removing the emulated hosts")
        return 130
    finally:
        if net is not None:
            # no signal may cut the clean-up short
            old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM, signal.SIGHUP})
            try:
                net.close()
                say(f"{PROG}: removed the emulated hosts")
            finally:
                signal.pthread_sigmask(signal.SIG_SETMASK, old)


if __name__ == "__main__":
    sys.exit(main())
