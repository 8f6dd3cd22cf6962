"""``%%kimi --map VAR``: evaluate the items in the notebook, run the fan-out or the batch,
show the summary line, and put the results in ``--out`` or the cell's value."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from IPython.display import display

from ... import batch
from ...core.errors import SessionError
from ...core.session import Session
from ...fanout import Fanout, as_items, pin_results
from ...wire.request import Options
from ..display import status_bundle
from .pins import pin_and_say
from .sessions import set_system


def evaluate(expr: str, namespace: Mapping[str, Any]) -> Any:
    """``--map EXPR``: a variable or expression (``df.col``, ``df['col']``) in the notebook."""
    try:
        return eval(expr, dict(namespace))  # the user's own kernel, the user's own expression
    except Exception as exc:
        raise SessionError(f"--map {expr}: {type(exc).__name__}: {exc}") from None


def run_magic(magic: Any, session: Session, args: Any, prompt: str) -> Any:
    """``%%kimi --map VAR [--out RESULTS] [--batch] [--pin-results NAME]``."""
    if args.tools or args.web:
        raise SessionError("--map does not run tools: drop --tools/--web")
    ns = magic.shell.user_ns
    items = evaluate(args.map_var, ns)
    as_items(items, args.map_var)
    if not prompt.strip():
        raise SessionError("the prompt is empty: write it in the cell body, with {item}")
    opts = Options(max_completion_tokens=args.max_tokens, think=args.think, effort=args.effort,
                   prefix=args.prefix, json=args.json, stream=False,
                   sampling={"temperature": args.temperature, "top_p": args.top_p})
    if args.batch:
        batch.check_options(opts)  # before pins or the system prompt change anything
    for target in args.pin:
        pin_and_say(magic, session, target)
    if args.system is not None:
        set_system(session, args.system)
    if args.batch:
        job = batch.submit(session, prompt, items, model=args.model, options=opts,
                           out=args.out, source=args.map_var)
        print(f"Submitted batch {job.id}: {job.items} items on {job.model} at "
              f"{batch.DISCOUNT_PERCENT}% of the price. If you stop waiting (or the kernel "
              f"restarts), %kimi batches collect {job.id} resumes.")
        try:
            results, summary = batch.collect(session, job.id, progress=True)
        except KeyboardInterrupt:
            raise SessionError(f"Stopped waiting; batch {job.id} keeps running on the server: "
                               f"%kimi batches collect {job.id} picks it up") from None
        display(status_bundle(summary.line(), summary.notices), raw=True)
    else:
        fan = Fanout(session, prompt, items, model=args.model, options=opts, progress=True,
                     name=args.out)
        results = fan.run()
        display(status_bundle(fan.line(), fan.notices), raw=True)
    return deliver(magic, session, args.out, args.pin_results, items,
                   results)


def deliver(magic: Any, session: Session, out: str | None, pin_name: str | None, items: Any,
            results: Any) -> Any:
    """Put results in ``out`` (or return them as the cell's value) and pin them if asked."""
    if pin_name:
        pin = pin_results(session, items, results, pin_name)
        print(f"Pinned the results as {pin.name!r} (~{session.pin_tokens(pin):,} tokens).")
    if out:
        magic.shell.user_ns[out] = results
        return None
    return results
