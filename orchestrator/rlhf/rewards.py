"""Rewards written as Python functions: loading, calling, validation, timeouts and weighting.

A reward function scores a batch of completions::

    def my_reward(prompts: list[str], completions: list[str], answer: list[str], **fields) -> list[float]

It receives the prompts, the completions and, as keyword arguments, the other fields of the records
(one list per field, aligned with the completions); it may declare only the fields it needs, or
``**fields`` for all of them (TRL's convention). It returns one finite float per completion.

Functions are named ``package.module:function`` or ``path/to/file.py:function`` (relative paths are
resolved against a base directory, by default the working directory). :class:`RewardScorer` calls
several of them concurrently (one thread each, inside the reward role's actor), each under a
timeout, checks every result and combines them with weights. A function that raises, times out,
returns the wrong number of scores or a non-number/NaN/inf fails the step with an error naming the
function and the record; with ``on_error="zero"`` the affected records score 0 and are counted.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import math
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

from orchestrator.config.errors import ConfigError

__all__ = ["RewardFunction", "RewardFunctionError", "RewardResult", "RewardScorer", "load_reward_function",
           "check_reward_functions", "ON_ERROR_CHOICES"]

ON_ERROR_CHOICES = ("raise", "zero")
_RESERVED = ("prompt", "completion", "response")


class RewardFunctionError(RuntimeError):
    """A reward function failed; the message names the function and the record(s).

    Attributes:
        function: the function's spec (``module:function``).
        problem: what went wrong.
        record: which record(s), e.g. ``record 3 (id=prompt-0-3)``.
    """

    def __init__(self, function: str, problem: str, record: str = "") -> None:
        self.function, self.problem, self.record = function, problem, record
        where = f" on {record}" if record else ""
        super().__init__(f"reward function {function}{where}: {problem}")

    def __reduce__(self) -> tuple:
        """Rebuilt from its three parts, so it crosses Ray's process boundary (the reward role) intact."""
        return type(self), (self.function, self.problem, self.record)


@dataclass(frozen=True)
class RewardFunction:
    """A loaded reward function.

    Attributes:
        spec: how it was named (``module:function`` or ``file.py:function``).
        name: metric name (``reward/<name>``); default the function's name.
        weight: its weight in the total reward.
        fn: the callable.
        fields: the record fields it accepts as keywords; None = all (it has ``**kwargs``).
        required: the fields it declares without a default (missing ones are an error).
    """

    spec: str
    name: str
    weight: float
    fn: Callable[..., Any]
    fields: Optional[frozenset[str]]
    required: frozenset[str]


_FILE_MODULES: dict[str, Any] = {}
_FILE_LOCK = threading.Lock()


def _import_module(spec: str, module_part: str, base_dir: Optional[Path]):
    """The module of a spec; a file is executed once per process, so its functions share its globals."""
    if not (module_part.endswith(".py") or "/" in module_part):
        return importlib.import_module(module_part)
    path = Path(module_part)
    path = (path if path.is_absolute() else (base_dir or Path.cwd()) / path).resolve()
    if not path.is_file():
        raise RewardFunctionError(spec, f"file {path} does not exist")
    with _FILE_LOCK:
        if str(path) not in _FILE_MODULES:
            name = "reward_file_" + hashlib.sha256(str(path).encode()).hexdigest()[:12]
            module_spec = importlib.util.spec_from_file_location(name, path)
            assert module_spec is not None and module_spec.loader is not None
            module = importlib.util.module_from_spec(module_spec)
            module_spec.loader.exec_module(module)
            _FILE_MODULES[str(path)] = module
        return _FILE_MODULES[str(path)]


def _keyword_fields(spec: str, fn: Callable[..., Any]) -> tuple[Optional[frozenset[str]], frozenset[str]]:
    """(accepted keyword fields or None for ``**kwargs``, required ones) from the signature."""
    params = list(inspect.signature(fn).parameters.values())
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if len(positional) < 2 and not any(p.kind == p.VAR_POSITIONAL for p in params):
        raise RewardFunctionError(spec, "must accept (prompts, completions, **fields)")
    rest = [p for p in params[2:] if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    required = frozenset(p.name for p in rest if p.default is p.empty)
    if any(p.kind == p.VAR_KEYWORD for p in params):
        return None, required
    return frozenset(p.name for p in rest), required


def load_reward_function(spec: str, weight: float = 1.0, name: Optional[str] = None,
                         base_dir: Optional[str | Path] = None) -> RewardFunction:
    """Import ``package.module:function`` or ``path/to/file.py:function``.

    Raises:
        RewardFunctionError: malformed spec, missing module/file/function, not callable, or a
            signature that cannot take ``(prompts, completions)``.
    """
    module_part, sep, func_name = spec.rpartition(":")
    if not sep or not module_part or not func_name.isidentifier():
        raise RewardFunctionError(spec, "is not 'package.module:function' or 'path/to/file.py:function'")
    try:
        module = _import_module(spec, module_part, Path(base_dir) if base_dir else None)
    except RewardFunctionError:
        raise
    except Exception as exc:  # noqa: BLE001 - any import failure is the user's module's fault
        raise RewardFunctionError(spec, f"cannot import {module_part}: {type(exc).__name__}: {exc}") from exc
    fn = getattr(module, func_name, None)
    if fn is None or not callable(fn):
        raise RewardFunctionError(spec, f"{module_part} has no function {func_name!r}")
    fields, required = _keyword_fields(spec, fn)
    return RewardFunction(spec, name or func_name, float(weight), fn, fields, required)


def check_reward_functions(functions: Sequence[Any]) -> None:
    """Every ``reward.functions[i]`` (a ``RewardFunctionConfig``) imports and can take
    ``(prompts, completions, **fields)``: the kinds that take reward functions call this before Ray.

    Raises:
        ConfigError: naming ``reward.functions[i]``.
    """
    for i, f in enumerate(functions):
        try:
            load_reward_function(f.function, f.weight, f.metric_name)
        except RewardFunctionError as exc:
            raise ConfigError(f"reward.functions[{i}]", f"{f.function}: {exc.problem}",
                              "fix the module/file path or the function name (package.module:function or "
                              "path/to/file.py:function, relative to the working directory)") from None


def _record_name(records: Sequence[Mapping[str, Any]], i: int) -> str:
    rid = records[i].get("id") if i < len(records) else None
    return f"record {i} (id={rid})" if rid is not None else f"record {i}"


def _batch_name(records: Sequence[Mapping[str, Any]], n: int) -> str:
    ids = [str(r["id"]) for r in records[:3] if "id" in r]
    more = ", ..." if n > 3 else ""
    return f"a batch of {n} records" + (f" (ids {', '.join(ids)}{more})" if ids else "")


def _columns(records: Sequence[Mapping[str, Any]]) -> dict[str, list]:
    """Record fields as aligned lists (a field missing from a record is None there)."""
    keys = sorted({k for r in records for k in r if k not in _RESERVED})
    return {k: [r.get(k) for r in records] for k in keys}


@dataclass
class RewardResult:
    """Scores of one batch.

    Attributes:
        total: weighted sum per completion.
        per_function: each function's scores (0 where it failed under ``on_error=zero``).
        num_errors: records scored 0 because of an error, per function.
        errors: the error messages (``on_error=zero``), for the run log.
    """

    total: list[float]
    per_function: dict[str, list[float]]
    num_errors: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    def metrics(self) -> dict[str, float]:
        """Per-step means for MLflow: ``reward/<name>``, ``reward/total``, ``reward_errors/<name>``."""
        out = {f"reward/{k}": sum(v) / max(len(v), 1) for k, v in self.per_function.items()}
        out["reward/total"] = sum(self.total) / max(len(self.total), 1)
        out.update({f"reward_errors/{k}": float(v) for k, v in self.num_errors.items()})
        return out


def _describe(exc: BaseException) -> str:
    """``raised ValueError: boom (at file.py:12)``: the type, the message and where it was raised."""
    frames = traceback.extract_tb(exc.__traceback__)
    at = f" (at {Path(frames[-1].filename).name}:{frames[-1].lineno})" if frames else ""
    return f"raised {type(exc).__name__}: {exc}{at}"


class _Call(threading.Thread):
    """One function's call on a daemon thread (a hung function cannot keep the process alive).

    If the batch call raises, the function is called once per record to find the failing record(s);
    the others keep their scores (used by ``on_error=zero``).
    """

    def __init__(self, fn: RewardFunction, prompts: Sequence[str], completions: Sequence[str],
                 columns: dict[str, list]) -> None:
        super().__init__(daemon=True, name=f"reward-{fn.name}")
        self.fn, self.prompts, self.completions, self.columns = fn, list(prompts), list(completions), columns
        self.result: Any = None
        self.error: Optional[BaseException] = None
        self.record_errors: dict[int, BaseException] = {}

    def _invoke(self, lo: int, hi: int) -> Any:
        kwargs = {k: v[lo:hi] for k, v in self.columns.items() if self.fn.fields is None or k in self.fn.fields}
        return self.fn.fn(self.prompts[lo:hi], self.completions[lo:hi], **kwargs)

    def run(self) -> None:
        try:
            self.result = self._invoke(0, len(self.completions))
        except Exception as exc:  # noqa: BLE001 - reported, with the record, by the scorer
            self.error = exc
            self.result = [self._one(i) for i in range(len(self.completions))]

    def _one(self, i: int) -> Any:
        try:
            out = list(self._invoke(i, i + 1))
            if len(out) != 1:
                raise ValueError(f"returned {len(out)} scores for 1 completion")
            return out[0]
        except Exception as exc:  # noqa: BLE001
            self.record_errors[i] = exc
            return None


class RewardScorer:
    """Runs reward functions concurrently on a batch and combines them with their weights.

    Args:
        functions: loaded functions (names must be unique: they name the metrics).
        on_error: ``raise`` (fail the step naming the function and record) or ``zero`` (score 0 and count).
        timeout_s: per-call wall-clock limit of each function (all start together). A timed-out
            function's thread cannot be stopped; it is left running as a daemon and its result ignored.
    """

    def __init__(self, functions: Sequence[RewardFunction], on_error: str = "raise", timeout_s: float = 30.0) -> None:
        assert functions, "no reward functions"
        assert on_error in ON_ERROR_CHOICES, f"on_error={on_error!r}"
        assert timeout_s > 0, f"timeout_s={timeout_s}"
        names = [f.name for f in functions]
        assert len(set(names)) == len(names), f"duplicate reward function names {names}"
        self.functions, self.on_error, self.timeout_s = list(functions), on_error, float(timeout_s)

    def __call__(self, prompts: Sequence[str], completions: Sequence[str],
                 records: Optional[Sequence[Mapping[str, Any]]] = None) -> RewardResult:
        """Score ``completions`` (one record per completion: a prompt's record repeats over its group).

        Raises:
            RewardFunctionError: with ``on_error=raise`` on any failure; always when a function
                needs a record field the records lack (a setup mistake, not a scoring failure).
        """
        n = len(completions)
        assert len(prompts) == n, f"{len(prompts)} prompts for {n} completions"
        records = list(records) if records is not None else [{} for _ in range(n)]
        assert len(records) == n, f"{len(records)} records for {n} completions"
        columns = _columns(records)
        for f in self.functions:
            missing = sorted(f.required - columns.keys())
            if missing:
                raise RewardFunctionError(f.spec, f"needs record field(s) {missing}, which the records lack",
                                          _batch_name(records, n))
        calls = [_Call(f, prompts, completions, columns) for f in self.functions]
        deadline = time.monotonic() + self.timeout_s
        for call in calls:
            call.start()
        result = RewardResult(total=[0.0] * n, per_function={})
        for call in calls:
            call.join(max(0.0, deadline - time.monotonic()))
            scores, failures, num_zeroed = self._check(call, records, n)
            if failures and self.on_error == "raise":
                record, problem = failures[0]
                raise RewardFunctionError(call.fn.spec, problem, record)
            if failures:
                result.num_errors[call.fn.name] = num_zeroed
                result.errors.extend(str(RewardFunctionError(call.fn.spec, p, r)) for r, p in failures[:5])
            result.per_function[call.fn.name] = scores
            result.total = [t + call.fn.weight * s for t, s in zip(result.total, scores)]
        return result

    def _check(self, call: _Call, records: Sequence[Mapping[str, Any]], n: int) -> tuple[list[float], list, int]:
        """Scores (0 where invalid), ``(record, problem)`` failures and the number of records zeroed.

        A failure of the whole batch (timeout, wrong length, ...) is one entry naming the batch and zeroes all n.
        """
        batch = _batch_name(records, n)
        if call.is_alive():
            return [0.0] * n, [(batch, f"timed out after {self.timeout_s:g} s (left running in the background)")], n
        if call.error is not None and not call.record_errors:
            return [0.0] * n, [(batch, _describe(call.error) + " on the whole batch; no record fails alone")], n
        out = call.result
        if isinstance(out, (str, bytes)) or not hasattr(out, "__len__"):
            return [0.0] * n, [(batch, f"returned {type(out).__name__}, not one float per completion")], n
        if len(out) != n:
            return [0.0] * n, [(batch, f"returned {len(out)} scores for {n} completions")], n
        scores, failures = [0.0] * n, []
        for i, value in enumerate(list(out)):
            if i in call.record_errors:
                failures.append((_record_name(records, i), _describe(call.record_errors[i])))
                continue
            try:
                x = float(value)
            except (TypeError, ValueError):
                failures.append((_record_name(records, i), f"returned {value!r}, not a number"))
                continue
            if not math.isfinite(x):
                failures.append((_record_name(records, i), f"returned {x}, not a finite number"))
                continue
            scores[i] = x
        return scores, failures, len(failures)
