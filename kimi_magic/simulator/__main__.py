"""``python -m kimi_magic.simulator``: run the simulator in the foreground until Ctrl-C."""

from __future__ import annotations

import argparse
import threading

from .server import Simulator


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m kimi_magic.simulator",
        description="A local Kimi-compatible server (deterministic replies, no network).")
    parser.add_argument("--port", type=int, default=8765, help="0 picks a free port")
    parser.add_argument("--tps", type=float, default=None, help="stream pacing, tokens/s")
    parser.add_argument("--usage", choices=("top", "choice", "none"), default="top")
    parser.add_argument("--cached-field", choices=("top", "nested", "none"), default="top")
    parser.add_argument("--summary-fidelity", choices=("faithful", "lossy"), default="faithful")
    parser.add_argument("--api-key", action="append", dest="api_keys", default=None,
                        help="accept only this key (repeatable); default accepts any")
    args = parser.parse_args(argv)
    sim = Simulator(port=args.port, api_keys=set(args.api_keys) if args.api_keys else None,
                    tps=args.tps, usage=args.usage, cached_field=args.cached_field,
                    summary_fidelity=args.summary_fidelity)
    sim.start()
    print(sim.url, flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        sim.stop()


if __name__ == "__main__":
    main()
