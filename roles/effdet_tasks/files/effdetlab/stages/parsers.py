"""Parsers for what automl's scripts print (TF estimator logs, model_inspect timers).

Every TF log message appears twice in a captured stream: once from the `tensorflow`
Python logger ("INFO:tensorflow:loss = 5.77, step = 0") and once from absl's handler
("I1130 02:20:27.066856 1406... basic_session_run_hooks.py:265] loss = 5.77, step = 0").
`TrainLogParser` strips either prefix and de-duplicates.
"""

import ast
import math
import re
from typing import Any, Dict, Iterable, List, Optional, Tuple

from effdetlab._records import Record

_ABSL = re.compile(r"^[IWEF]\d{4} \d\d:\d\d:\d\d\.\d+\s+\d+ [\w.]+:\d+\] ")
_PYLOG = re.compile(r"^(?:INFO|WARNING|ERROR):tensorflow:")
_KV = re.compile(r"([A-Za-z_][\w/]*) = ([-+\w.]+)")
# "loss = 5.071308, step = 1 (12.530 sec)"   /   "box_loss = ..., det_loss = ..., step = 1"
_STEP = re.compile(r"^(?P<kvs>(?:[A-Za-z_][\w/]* = [^,]+, )+)step = (?P<step>\d+)(?: \((?P<sec>[\d.]+) sec\))?$")
_RATE = re.compile(r"^global_step/sec: (?P<rate>[\d.eE+-]+)$")
_SAVE = re.compile(r"^Saving checkpoints for (?P<step>\d+) into (?P<path>.+?)\.?$")
_RESTORE = re.compile(r"^Restoring parameters from (?P<path>.+)$")
_EVAL = re.compile(r"^Saving dict for global step (?P<step>\d+): (?P<kvs>.*)$")
_FINAL = re.compile(r"^Loss for final step: (?P<loss>[-+\w.]+)\.$")


def strip_prefix(line: str) -> str:
    line = line.rstrip("\r\n")
    m = _ABSL.match(line) or _PYLOG.match(line)
    return line[m.end():] if m else line


def _num(s: str) -> Any:
    try:
        v = float(s)
    except ValueError:
        return s
    return int(v) if re.fullmatch(r"[-+]?\d+", s) else v


def _json_num(v: Any) -> Any:
    """JSON has no NaN/Inf: keep them as strings so a diverged loss is visible, not dropped."""
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    return v


class TrainLogParser(Record):
    """Feed lines; collect per-step records and events.

    A message repeated on the very next parsed line is the other handler's copy and is
    skipped.  A step record is emitted once all of its lines are in (the next step's first
    line, another event, or `flush()`), merging "loss = .., step = N" with the extra
    "box_loss = .., cls_loss = .., step = N" line.
    """

    def __init__(self, pending: Optional[Dict[str, Any]] = None, last_rate: Optional[float] = None,
                 last_msg: Optional[str] = None) -> None:
        self.pending = pending
        self.last_rate = last_rate
        self.last_msg = last_msg

    def feed(self, line: str, now: float) -> List[Dict[str, Any]]:
        """Returns finished records: {"kind": "step"|"checkpoint"|"restore"|"eval"|"final", ...}."""
        msg = strip_prefix(line).strip()
        out: List[Dict[str, Any]] = []
        m = _STEP.match(msg)
        other = None if m else next(((k, r.match(msg)) for k, r in _EVENTS if r.match(msg)), None)
        if not m and other is None:
            return out
        if msg == self.last_msg:
            return out
        self.last_msg = msg
        if m:
            step = int(m.group("step"))
            kvs = {k: _json_num(_num(v)) for k, v in _KV.findall(m.group("kvs"))}
            if self.pending is not None and self.pending["step"] != step:
                out.append(self._emit())
            if self.pending is None:
                self.pending = {"kind": "step", "step": step, "time": now}
            self.pending.update(kvs)
            if m.group("sec"):
                self.pending["sec"] = float(m.group("sec"))
            if self.last_rate is not None:  # "global_step/sec" precedes its step's lines
                self.pending["steps_per_sec"], self.last_rate = self.last_rate, None
            return out
        assert other is not None
        kind, em = other
        if self.pending is not None:
            out.append(self._emit())
        if kind == "rate":
            self.last_rate = float(em.group("rate"))
            return out
        rec: Dict[str, Any] = {"kind": kind, "time": now}
        if kind == "checkpoint":
            rec.update(step=int(em.group("step")), path=f"{em.group('path')}-{em.group('step')}")
        elif kind == "restore":
            rec["path"] = em.group("path")
            sm = re.search(r"-(\d+)$", rec["path"])
            rec["step"] = int(sm.group(1)) if sm else None
        elif kind == "eval":
            rec["step"] = int(em.group("step"))
            rec["metrics"] = {k: _json_num(_num(v)) for k, v in _KV.findall(em.group("kvs"))}
        else:
            rec["loss"] = _json_num(_num(em.group("loss")))
        out.append(rec)
        return out

    def _emit(self) -> Dict[str, Any]:
        rec, self.pending = self.pending, None
        assert rec is not None
        return rec

    def flush(self) -> List[Dict[str, Any]]:
        return [self._emit()] if self.pending is not None else []


_EVENTS = (("rate", _RATE), ("checkpoint", _SAVE), ("restore", _RESTORE), ("eval", _EVAL),
           ("final", _FINAL))


def parse_train_log(lines: Iterable[str], now: float = 0.0) -> List[Dict[str, Any]]:
    p = TrainLogParser()
    out: List[Dict[str, Any]] = []
    for line in lines:
        out += p.feed(line, now)
    return out + p.flush()


# ----------------------------------------------------------------------------- model_inspect

_LAT = re.compile(r"^Per batch inference time:\s+(?P<s>[\d.eE+-]+)\s*$")
_FPS = re.compile(r"^FPS:\s+(?P<fps>[\d.eE+-]+)\s*$")
_THREADS = re.compile(r"^num_threads for benchmarking: (?P<n>\d+)\s*$")
_RUNS = re.compile(r"^Start benchmark runs total=(?P<n>\d+)\s*$")


class BenchOutput(Record):
    def __init__(self, latency_s: float, fps: float, threads_reported: Optional[int] = None,
                 runs: Optional[int] = None) -> None:
        self.latency_s = latency_s
        self.fps = fps
        self.threads_reported = threads_reported
        self.runs = runs

    @property
    def latency_ms(self) -> float:
        return self.latency_s * 1000.0


def parse_benchmark(text: str) -> Optional[BenchOutput]:
    """automl's own timer: 'Per batch inference time:  0.2401' (seconds) and 'FPS:  4.16'.

    Both `--runmode=bm` (benchmark_model) and `--runmode=saved_model_benchmark`
    (ServingDriver.benchmark) print these two lines.  The last pair wins."""
    lat = fps = None
    threads = runs = None
    for raw in text.splitlines():
        line = strip_prefix(raw)
        m_lat, m_fps = _LAT.match(line), _FPS.match(line)
        m_thr, m_runs = _THREADS.match(line), _RUNS.match(line)
        if m_lat:
            lat = float(m_lat.group("s"))
        elif m_fps:
            fps = float(m_fps.group("fps"))
        elif m_thr:
            threads = int(m_thr.group("n"))
        elif m_runs:
            runs = int(m_runs.group("n"))
    if lat is None or fps is None:
        return None
    return BenchOutput(lat, fps, threads, runs)


_ALL_FILES = re.compile(r"^all_files=\s*(?P<list>\[.*\])\s*$")
_WROTE = re.compile(r"^writing file to (?P<path>.+?)\s*$")


def parse_infer(text: str) -> Tuple[List[str], List[str]]:
    """saved_model_infer prints 'all_files= [...]' (its glob order) and one 'writing file to
    <dir>/<i>.jpg' per image; output i belongs to all_files[i]."""
    inputs: List[str] = []
    outputs: List[str] = []
    for raw in text.splitlines():
        line = strip_prefix(raw)
        m_all, m_wrote = _ALL_FILES.match(line), _WROTE.match(line)
        if m_all:
            try:
                inputs = [str(x) for x in ast.literal_eval(m_all.group("list"))]
            except (ValueError, SyntaxError):
                inputs = []
        elif m_wrote:
            outputs.append(m_wrote.group("path"))
    return inputs, outputs


def last_error(text: str, limit: int = 400) -> str:
    """The most telling line of a failed run: the last exception line of a traceback."""
    lines = [strip_prefix(x) for x in text.splitlines() if x.strip()]
    for line in reversed(lines):
        if re.match(r"^[\w.]*(Error|Exception|Exit)\b.*:", line) or re.match(r"^[\w.]+Error$", line):
            return line[:limit]
    return (lines[-1] if lines else "no output")[:limit]
