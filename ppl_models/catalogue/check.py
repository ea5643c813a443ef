"""``ppl-models check``: re-run a family's reference answers and say how far today's code is from them.

Each :class:`~ppl_models.catalogue.references.Record` states its figure's protocol (``full``) and a reduced
one (fewer epochs, particles, temperatures) with the value it gave when it was written down and a tolerance.
A reduced check trains the reduced protocol into a temporary directory through the catalogue (the same
:func:`~ppl_models.catalogue.train` a user runs), re-evaluates it when the protocol says so, and compares the
metric with the reduced value: out of tolerance is a failure. ``--full`` does the same with the figure's own
protocol and compares with the README value: a failure when they differ by more than
:data:`FULL_STANDARD_ERRORS` standard errors (for a figure with no standard error at all, an MMD² or an exact
value: when today's value does not round to it at the precision it was recorded at). Either way every line shows
today's value, the reference, the difference and the difference in standard errors (the reference's, or where it
has none today's).
"""

from __future__ import annotations

import math
import statistics
import tempfile
import time
from dataclasses import dataclass
from decimal import Decimal
from typing import Callable, Optional

from .references import Protocol, Record, records_of

#: a full re-run further than this many standard errors from the README value fails
FULL_STANDARD_ERRORS = 3.0


@dataclass
class Verdict:
    """One record's check. ``ok`` is None when the record was not re-run (``note`` says why)."""

    record: Record
    full: bool
    today: Optional[float] = None
    today_stderr: Optional[float] = None
    reference: Optional[float] = None
    tolerance: Optional[float] = None
    seconds: Optional[float] = None
    ok: Optional[bool] = None
    note: str = ""

    @property
    def difference(self) -> Optional[float]:
        return None if self.today is None else self.today - self.reference

    @property
    def standard_error(self) -> Optional[float]:
        """The standard error the difference is measured in: the reference's for a full check (a README
        figure's), else today's run's (a reduced value was written down without one)."""
        se = self.record.stderr if self.full else None
        return se if se else (self.today_stderr or None)

    @property
    def in_standard_errors(self) -> Optional[float]:
        se = self.standard_error
        return None if self.today is None or not se else self.difference / se

    def line(self) -> str:
        r = self.record
        mode = "full" if self.full else "reduced"
        if self.ok is None:
            return f"{r.name} ({mode}): not re-run: {self.note}"
        today = f"{self.today:.5g}" + (f" ± {self.today_stderr:.2g}" if self.today_stderr else "")
        ref = f"{self.reference:.5g}" + (f" ± {r.stderr:.2g}" if self.full and r.stderr else "")
        z = self.in_standard_errors
        z_text = f"{z:+.2f} se" if z is not None else "no standard error"
        bound = (f"tolerance ± {self.tolerance:.3g}" if not self.full
                 else f"limit {FULL_STANDARD_ERRORS:g} se" if z is not None
                 else f"limit ± {self.tolerance:.2g}, the value's recorded precision")
        verdict = "ok" if self.ok else "OUT OF TOLERANCE"
        return (f"{r.name} ({mode}, {r.metric['key']}): today {today}, reference {ref}, difference "
                f"{self.difference:+.4f} ({z_text}; {bound}), {self.seconds:.0f}s: {verdict}")


def run_protocol(family: str, protocol: Protocol, log: Callable[[str], None] = lambda message: None) -> dict:
    """Train ``protocol`` into a temporary run directory through the catalogue, re-evaluate it when the
    protocol says so, and return its metrics (the directory is removed)."""
    from . import (  # the catalogue's own entry points, as a user runs them
        evaluate,
        make_spec,
        train,
    )

    spec = make_spec(family, overrides=list(protocol.overrides))
    with tempfile.TemporaryDirectory(prefix=f"ppl-models-check-{family}-") as directory:
        metrics = train(spec, directory, progress=False, log=log)
        if protocol.evaluate:
            options = dict(protocol.evaluate)
            metrics = evaluate(directory, num_particles=options.pop("particles", None), seed=options.pop("seed", None),
                               **options)
    return metrics


def recorded_precision(value: float) -> float:
    """Half a unit of the last decimal ``value`` was recorded with (0.0342 -> 0.00005, 293.17 -> 0.005)."""
    return 0.5 * 10.0 ** Decimal(repr(float(value))).as_tuple().exponent


def check_record(record: Record, full: bool = False, run: Optional[Callable] = None) -> Verdict:
    """Re-run one record (reduced, or ``full``) and judge it; ``run(family, protocol) -> metrics`` (default
    :func:`run_protocol`) does the re-running."""
    run = run or run_protocol
    protocol = record.full if full else record.reduced
    verdict = Verdict(record, full)
    if protocol is None:
        verdict.note = record.full_not_by_check if full else record.reduced_not_by_check
        return verdict
    started = time.perf_counter()
    metrics = run(record.family, protocol)
    verdict.seconds = time.perf_counter() - started
    key, se_key = record.metric["key"], record.metric["stderr_key"]
    if key not in metrics:
        verdict.ok, verdict.note = False, f"the run's metrics have no {key!r}"
        verdict.today, verdict.reference = math.nan, record.value if full else protocol.value
        return verdict
    verdict.today = float(metrics[key])
    verdict.today_stderr = float(metrics[se_key]) if se_key and metrics.get(se_key) is not None else None
    if full:
        verdict.reference = record.value
        z = verdict.in_standard_errors
        if z is None:  # nothing to scale by: the figure as recorded (rounded), so half a unit of its last digit
            verdict.tolerance = recorded_precision(record.value)
            verdict.ok = abs(verdict.difference) <= verdict.tolerance * (1 + 1e-9)
        else:
            verdict.ok = abs(z) <= FULL_STANDARD_ERRORS
    else:
        verdict.reference, verdict.tolerance = protocol.value, protocol.tolerance
        verdict.ok = abs(verdict.difference) <= protocol.tolerance
    return verdict


#: the training seeds a reduced value's tolerance is measured over, and the tolerance in their standard deviations
MEASURE_SEEDS, MEASURE_SDS = (0, 1, 2), 3.0


def _round_up(x: float, digits: int = 2) -> float:
    """``x`` rounded up to ``digits`` significant digits (a tolerance never shrinks by rounding)."""
    scale = 10.0 ** (math.floor(math.log10(x)) - digits + 1)
    return float(f"{math.ceil(x / scale - 1e-9) * scale:.{digits}g}")


def measure_reduced(record: Record, seeds: tuple = MEASURE_SEEDS, run: Optional[Callable] = None) -> dict:
    """Measure a record's reduced protocol again, as its ``value`` / ``tolerance`` were written: the protocol
    with each training seed (``train.seed=S`` appended to its overrides), the first seed's value as the expected
    one, and :data:`MEASURE_SDS` standard deviations over the seeds (at least 0.1% of the value) as the tolerance.
    After an intended change of behaviour, paste the result into the record."""
    run = run or run_protocol
    protocol = record.reduced
    if protocol is None:
        raise ValueError(f"{record.name} has no reduced protocol ({record.reduced_not_by_check})")
    values, seconds = [], []
    for seed in seeds:
        started = time.perf_counter()
        metrics = run(record.family, Protocol(protocol.overrides + (f"train.seed={seed}",), protocol.evaluate))
        seconds.append(time.perf_counter() - started)
        values.append(float(metrics[record.metric["key"]]))
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    tolerance = _round_up(max(MEASURE_SDS * sd, 1e-3 * max(abs(values[0]), 1.0)))
    return {"value": round(values[0], 4), "tolerance": tolerance,
            "tolerance_from": (f"{MEASURE_SDS:g} x the standard deviation of the value over training seeds "
                               f"{', '.join(map(str, seeds))} ({', '.join(f'{v:.4g}' for v in values)}; sd {sd:.3g}), "
                               "at least 0.1% of the value; the check runs seed 0"),
            "measured": time.strftime("%Y-%m-%d", time.gmtime()), "seconds": round(seconds[0], 1)}


def check(family: str, record: Optional[str] = None, full: bool = False, log: Callable[[str], None] = print,
          run: Optional[Callable] = None) -> list[Verdict]:
    """Check ``family``'s records (or the one named ``record``), printing one line each through ``log``."""
    verdicts = []
    for r in records_of(family, record):
        verdicts.append(check_record(r, full, run))
        log(verdicts[-1].line())
    return verdicts
