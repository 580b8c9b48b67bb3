"""`contactgate load FILE`: apply an organisation's signed load file (gateway.bulk_load) on the
gateway host: a first or full re-load of its caseload, resumable, audited per batch."""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import click

from gateway.cli.base import Context, command, pass_ctx


class _StopOnSignal:
    """SIGTERM/SIGINT: the batch being applied is finished (committed), then the load stops."""

    def __init__(self):
        self.reason: str | None = None
        self._before = {s: signal.signal(s, self._handle) for s in (signal.SIGTERM, signal.SIGINT)}

    def _handle(self, number, frame) -> None:
        self.reason = signal.Signals(number).name

    def __call__(self) -> str | None:
        return self.reason

    def restore(self) -> None:
        for number, handler in self._before.items():
            signal.signal(number, handler)


@command("load")
@click.argument("load_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@pass_ctx
def load(ctx: Context, load_file: Path) -> None:
    """Apply LOAD_FILE, an organisation's caseload signed with its registered certificate (made at the
    organisation with `contactgate load-prepare`): checked as a push is (the signer's certificate
    trusted, registered to the organisation and not revoked; the organisation accredited with the
    push scope; every batch as signed), then linked batch by batch with the same rules as
    SubmitUpdates, each batch in one transaction with one audit entry. Run it again after a crash
    or a stop: it resumes after the last batch applied; a file fully applied is not applied again.

    Exit codes: 0 loaded, 2 the file is refused (audited; nothing changed), 3 could not run or was
    stopped (SIGTERM, SIGINT: the batch in flight is finished; run again to resume)."""
    from contactgate_wire.faults import Refusal
    from gateway import bulk_load
    from gateway.pipeline.dispatch import link_policy_of

    ctx.preflight()
    settings = ctx.settings
    stop = _StopOnSignal()

    def progress(summary: bulk_load.Summary) -> None:
        done = summary.batches_before + summary.batches_applied
        if done % 10 == 0 or done == summary.batches:
            rate = summary.records_applied / summary.seconds if summary.seconds else 0.0
            click.echo(f"progress: batch {done}/{summary.batches}, {rate:.0f} records/s", err=True)

    try:
        summary = bulk_load.run(ctx.engine, ctx.trail, bulk_load.trust_anchors(settings), load_file,
                                policy=link_policy_of(settings), purge_years=settings.retention_purge_years,
                                stop=stop, progress=progress)
    except Refusal as refusal:
        click.echo(f"error: refused ({refusal.code}): {refusal.detail}", err=True)
        sys.exit(2)
    except bulk_load.Stopped as stopped:
        click.echo(f"stopped ({stopped}): the batches applied are committed; run `contactgate load` again to "
                   f"resume", err=True)
        sys.exit(3)
    finally:
        stop.restore()
    for line in summary.lines():
        click.echo(line)
