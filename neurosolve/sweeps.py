"""Parameter sweeps: run one function (or one solve recipe) over a grid of points, serially
or as Ray tasks, and get the results back in the order of the grid.

:func:`sweep` is the whole interface; the Ray engine is an optional extra
(``pip install "neurosolve[distributed]"``) and ``import neurosolve`` never imports Ray.
See ``docs/sweeps.md`` for running against a cluster, payload sizes and overheads.
"""

from __future__ import annotations

import dataclasses
import itertools
import numbers
import pickle
import traceback
import warnings
from collections.abc import Iterable, Mapping
from typing import Any, Callable

__all__ = ["sweep", "SweepError", "SweepFailure", "expand_grid", "ENGINES"]

#: the values ``sweep(..., engine=)`` accepts
ENGINES = ("serial", "ray")
_ON_ERROR = ("raise", "return")
_SPEC_KEYS = ("problem", "solver", "options")
_INSTALL_HINT = 'pip install "neurosolve[distributed]"'


# -- failures --------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class SweepFailure:
    """One grid point whose task failed.

    Attributes
    ----------
    index : int
        Position of the point in the (expanded) grid.
    point : object
        The grid point itself.
    error : BaseException
        The exception raised by the function (the original object, pickled back from the
        worker), or Ray's error when the worker died more often than ``max_retries``.
    traceback : str
        The traceback, formatted where the exception was raised (on the worker for Ray).
    """

    index: int
    point: Any
    error: BaseException
    traceback: str = ""


class SweepError(RuntimeError):
    """Raised by :func:`sweep` (``on_error="raise"``) after every task has finished when at
    least one grid point failed.

    Attributes
    ----------
    failures : list of SweepFailure
        The failed points, in grid order (index, point, exception, traceback).
    results : list
        The sweep's results in grid order, with the exception object in place of each
        failed point: nothing that finished is lost.
    """

    def __init__(self, failures: list[SweepFailure], results: list):
        self.failures = list(failures)
        self.results = list(results)
        shown = "; ".join(f"#{f.index} {f.point!r}: {type(f.error).__name__}: {f.error}"
                          for f in self.failures[:5])
        more = f" (and {len(self.failures) - 5} more)" if len(self.failures) > 5 else ""
        first = self.failures[0].traceback.rstrip() if self.failures else ""
        super().__init__(
            f"{len(self.failures)} of {len(self.results)} sweep points failed: {shown}{more}"
            + (f"\nTraceback of the first failure (point #{self.failures[0].index}):\n{first}"
               if first else ""))

    def __reduce__(self):
        return type(self), (self.failures, self.results)


# -- the grid --------------------------------------------------------------------------------

def expand_grid(grid: Any) -> list:
    """The list of points of ``grid``, in the order :func:`sweep` runs and returns them.

    Parameters
    ----------
    grid : mapping or iterable
        A mapping ``{name: values}`` is the Cartesian product of its value lists, as
        dicts ``{name: value}``, in the order of nested for-loops over the keys in
        insertion order (the last key varies fastest). Any other iterable (list, tuple,
        range, array, generator) is taken as the list of points, one per element, as is.

    Returns
    -------
    list

    Raises
    ------
    TypeError
        ``grid`` is a string, not iterable, or a mapping value is not a list of values.
    ValueError
        The grid has no points.

    Examples
    --------
    >>> from neurosolve.sweeps import expand_grid
    >>> expand_grid({"n": [8, 16], "walls": ["neumann", "dirichlet"]})[:2]
    [{'n': 8, 'walls': 'neumann'}, {'n': 8, 'walls': 'dirichlet'}]
    >>> expand_grid([0.1, 0.01])
    [0.1, 0.01]
    """
    if isinstance(grid, Mapping):
        keys = list(grid)
        values = []
        for k in keys:
            v = grid[k]
            if isinstance(v, (str, bytes, Mapping)) or not isinstance(v, Iterable):
                raise TypeError(
                    f"grid[{k!r}] must be a list of values (the grid is the Cartesian product "
                    f"of the lists), got {type(v).__name__}; write [{v!r}] for one value")
            values.append(list(v))
        points = [dict(zip(keys, combo)) for combo in itertools.product(*values)] if keys else []
        if not points:
            empty = [k for k, v in zip(keys, values) if not v]
            raise ValueError("grid is empty: " + (f"grid[{empty[0]!r}] has no values"
                                                  if empty else "the mapping has no keys"))
        return points
    if isinstance(grid, (str, bytes)) or not isinstance(grid, Iterable):
        raise TypeError(f"grid must be a list of points or a dict of value lists, got "
                        f"{type(grid).__name__}")
    points = list(grid)
    if not points:
        raise ValueError("grid is empty: give at least one point")
    return points


# -- what runs per point ---------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class _SolveSpec:
    """``solve(problem(point), solver(point), **options)``; warm start: ``x0=previous.x``."""

    problem: Callable[[Any], Any]
    solver: Any = None
    options: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def __call__(self, point: Any, previous: Any = None) -> Any:
        from neurosolve.core import Result, Solver, solve

        problem = self.problem(point)
        solver = self.solver
        if solver is not None and not isinstance(solver, Solver):
            solver = solver(point)
        options = dict(self.options)
        if isinstance(previous, Result) and "x0" not in options:
            options["x0"] = previous.x
        return solve(problem, solver, **options)


def _as_call(fn_or_spec: Any) -> Callable:
    """The per-point callable of ``fn_or_spec`` (see :func:`sweep`)."""
    from neurosolve.core import Solver

    spec = fn_or_spec
    if isinstance(spec, Mapping):
        unknown = sorted(set(spec) - set(_SPEC_KEYS), key=str)
        if unknown:
            raise ValueError(f"fn_or_spec: unknown key {unknown[0]!r} in the spec dict (keys: "
                             f"{', '.join(map(repr, _SPEC_KEYS))})")
        if "problem" not in spec:
            raise ValueError("fn_or_spec: a spec dict needs a 'problem' factory "
                             "(point -> problem)")
        problem, solver, options = spec["problem"], spec.get("solver"), spec.get("options") or {}
        if not isinstance(options, Mapping):
            raise TypeError(f"fn_or_spec['options'] must be a dict of solve() keywords, got "
                            f"{type(options).__name__}")
    elif isinstance(spec, tuple):
        if len(spec) != 2:
            raise ValueError(f"fn_or_spec: a spec tuple is (problem_factory, solver_or_factory), "
                             f"got {len(spec)} items")
        (problem, solver), options = spec, {}
    elif callable(spec):
        return spec
    else:
        raise TypeError(f"fn_or_spec must be a callable fn(point), a (problem_factory, "
                        f"solver_factory) tuple or a spec dict, got {type(spec).__name__}")
    if not callable(problem):
        raise TypeError(f"fn_or_spec: the problem factory must be callable (point -> problem), "
                        f"got {type(problem).__name__}")
    if solver is not None and not (isinstance(solver, Solver) or callable(solver)):
        raise TypeError(f"fn_or_spec: the solver must be None, a Solver or a callable "
                        f"(point -> Solver), got {type(solver).__name__}")
    return _SolveSpec(problem, solver, dict(options))


def _portable(exc: BaseException) -> BaseException:
    """``exc`` when it pickles, else a RuntimeError carrying its type and message."""
    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:  # noqa: BLE001 - any pickling failure
        return RuntimeError(f"{type(exc).__module__}.{type(exc).__name__}: {exc} "
                            "(the original exception could not be pickled)")


def _without_state(value: Any) -> Any:
    from neurosolve.core import Result

    return dataclasses.replace(value, state=None) if isinstance(value, Result) else value


def _run_chunk(call: Callable, points: list, warm_start: bool, portable: bool,
               keep_state: bool = True) -> list:
    """Run ``call`` on each point of a chunk, in order. One entry per point:
    ``(True, value)`` or ``(False, exception, traceback_text)``. With ``warm_start``,
    ``call(point, previous)`` gets the previous point's value (None for the first point of
    the chunk and after a failure). ``keep_state=False`` drops ``Result.state`` from what
    is returned (after the next point of the chunk has used it)."""
    out = []
    previous = None
    for point in points:
        try:
            value = call(point, previous) if warm_start else call(point)
        except Exception as exc:  # noqa: BLE001 - reported per point, never hangs the sweep
            tb = traceback.format_exc()
            out.append((False, _portable(exc) if portable else exc, tb))
            previous = None
        else:
            out.append((True, value if keep_state else _without_state(value)))
            previous = value
    return out


def _run_chunk_pickled(call: Callable, points: list, warm_start: bool,
                      keep_state: bool) -> bytes:
    """:func:`_run_chunk` on a Ray worker, the outcome pickled by the worker itself.

    The driver unpickles the bytes into objects of its own: arrays that Ray would otherwise
    hand back as read-only views of its shared-memory object store come back as ordinary
    writable arrays, as from a serial loop, and stay valid after Ray shuts down. A value
    that cannot be pickled fails its point (not the chunk).
    """
    from ray import cloudpickle

    out = _run_chunk(call, points, warm_start, True, keep_state)
    try:
        return cloudpickle.dumps(out)
    except Exception:  # noqa: BLE001 - find the value(s) that do not pickle
        fixed = []
        for entry in out:
            try:
                cloudpickle.dumps(entry)
                fixed.append(entry)
            except Exception as exc:  # noqa: BLE001
                err = TypeError(f"the result of this point cannot be pickled "
                                f"({type(exc).__name__}: {exc}); return plain data")
                fixed.append((False, err, traceback.format_exc()))
        return cloudpickle.dumps(fixed)


# -- the engines -----------------------------------------------------------------------------

def _bar(progress: bool, total: int, engine: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=f"sweep[{engine}]", unit="pt", leave=False,
                disable=not progress)


def _serial(call, chunks, warm_start, keep_state, bar, store):
    for chunk in chunks:
        store(chunk, _run_chunk(call, [p for _, p in chunk], warm_start, False, keep_state))
        bar.update(len(chunk))


def _import_ray():
    try:
        import ray
    except ImportError as exc:
        raise ImportError(
            'sweep(engine="ray") needs Ray, which is an optional extra of neurosolve: '
            f'{_INSTALL_HINT} (or pip install "ray>=2.9"); engine="serial" runs without it'
        ) from exc
    return ray


def _ray(call, chunks, warm_start, keep_state, bar, store, *, max_retries, address, num_cpus,
         ray_init, ray_options, keep_ray):
    ray = _import_ray()
    started = False
    if ray.is_initialized():
        if address is not None or num_cpus is not None or ray_init:
            warnings.warn("sweep: Ray is already initialized; address=, num_cpus= and "
                          "ray_init= are ignored (the running Ray is used and left running)",
                          RuntimeWarning, stacklevel=3)
    else:
        kwargs = dict(ray_init or {})
        if address is not None:
            kwargs["address"] = address
        else:
            kwargs.setdefault("include_dashboard", False)
            if num_cpus is not None:
                kwargs["num_cpus"] = num_cpus
        ray.init(**kwargs)
        started = True
    pending: dict = {}
    try:
        task = ray.remote(_run_chunk_pickled).options(
            max_retries=max_retries, retry_exceptions=False, **dict(ray_options or {}))
        try:
            call_ref = ray.put(call)  # shipped once, not once per task
        except Exception as exc:  # noqa: BLE001 - cloudpickle raises several types
            raise TypeError(f"fn_or_spec cannot be pickled for Ray ({type(exc).__name__}: "
                            f"{exc}); move what it captures (locks, open files, live "
                            "handles) inside the function") from exc
        for chunk in chunks:
            ref = task.remote(call_ref, [p for _, p in chunk], warm_start, keep_state)
            pending[ref] = chunk
        while pending:
            refs = list(pending)
            ready, _ = ray.wait(refs, num_returns=1)
            if len(refs) > 1:  # collect everything finished by now in one pass
                ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
            for ref in ready:
                chunk = pending.pop(ref)
                try:
                    out = pickle.loads(ray.get(ref))
                except Exception as exc:  # noqa: BLE001 - worker died past max_retries...
                    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
                    if "No module named" in str(exc):
                        tb += ("Hint: the workers could not import a module that fn (or what "
                               "it holds) refers to; install it on every node or ship it with "
                               "ray_init={'runtime_env': {'py_modules': [...]}} "
                               "(docs/sweeps.md).\n")
                    out = [(False, exc, tb)] * len(chunk)
                store(chunk, out)
                bar.update(len(chunk))
                del ref
    except BaseException:
        for ref in pending:  # an interrupted sweep leaves no tasks behind
            try:
                ray.cancel(ref, force=True)
            except Exception:  # noqa: BLE001 - best effort
                pass
        raise
    finally:
        pending.clear()
        if started and not keep_ray:
            ray.shutdown()


# -- the entry point -------------------------------------------------------------------------

def _check_int(name: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return int(value)


def sweep(fn_or_spec: Any, grid: Any, *, engine: str = "serial", chunksize: int = 1,
          warm_start: bool = False, keep_state: bool = True, on_error: str = "raise",
          max_retries: int = 3,
          progress: bool = True, address: str | None = None, num_cpus: int | None = None,
          ray_init: Mapping[str, Any] | None = None,
          ray_options: Mapping[str, Any] | None = None, keep_ray: bool = False) -> list:
    """Run ``fn_or_spec`` on every point of ``grid``; the results come back in grid order.

    Parameters
    ----------
    fn_or_spec : callable, tuple or dict
        What runs per point:

        * a callable ``fn(point)`` (``fn(point, previous)`` with ``warm_start=True``)
          returning anything picklable, typically a :class:`neurosolve.Result`;
        * a tuple ``(problem_factory, solver)``: ``neurosolve.solve(problem_factory(point),
          solver)``, where ``solver`` is a :class:`neurosolve.Solver` (the same for every
          point), a callable ``point -> Solver``, or None (the default solver);
        * a dict ``{"problem": problem_factory, "solver": solver, "options": {...}}``: the
          same, with ``options`` passed to :func:`neurosolve.solve` (``backend=``,
          ``record_every=``...). ``solver`` and ``options`` are optional.

        For the two spec forms ``warm_start=True`` passes ``x0=previous.x`` (the previous
        point's answer in the chunk), so the problems of a chunk must share the shape of x.
        With Ray, the callable and its closure are pickled once (``ray.put``) and shared by
        every task: big data captured by ``fn`` travels once per worker, not once per point.
    grid : dict of lists, or iterable of points
        A dict ``{name: values}`` is expanded to the Cartesian product of the lists, points
        being dicts ``{name: value}`` in nested-loop order (last key fastest); anything
        else (list, tuple, range, array, generator) is the list of points as is. See
        :func:`expand_grid`. ``fn`` receives the point itself (a dict is not unpacked).
    engine : {"serial", "ray"}
        ``"serial"``: a loop in this process, the reference. ``"ray"``: one Ray task per
        chunk (needs the ``distributed`` extra).
    chunksize : int
        Consecutive grid points per task (default 1). A chunk runs its points in order in
        one process, which saves per-task overhead for cheap points and is where warm
        starts happen. The serial engine chunks identically, so both engines compute the
        same thing.
    warm_start : bool
        Call ``fn(point, previous)``, ``previous`` being the result of the point before in
        the same chunk (None for a chunk's first point and after a failed point).
    keep_state : bool
        False: return :class:`neurosolve.Result` values with ``state=None`` (the final
        solver state is what warm starts of the *same* problem resume from; it holds the
        solver's vectors and the problem's fingerprint, which keeps the problem's operator,
        and is most of a pickled Result: 8-10 times the answer ``x`` for CG on a Poisson
        grid). Saves memory and, with Ray, transfer per task; warm starts inside a chunk
        still see the full previous result. A state that crossed a process boundary does
        not match the driver's problem anyway (fingerprints compare objects by identity).
    on_error : {"raise", "return"}
        What a failing point does. Either way every other point still runs and nothing
        hangs. ``"raise"``: after all tasks finish, raise :class:`SweepError` listing each
        failed point with its exception and traceback (``err.results`` holds the finished
        results). ``"return"``: put the exception object in the failed point's place.
    max_retries : int
        Ray: how often a task is re-run when its worker process dies (a crash, an
        out-of-memory kill, a lost node). Exceptions raised by ``fn`` are not retried
        (they are deterministic; they are reported). A chunk that dies more often fails
        with Ray's error for each of its points. Finished tasks are never recomputed:
        results are collected as tasks complete (``ray.wait``). Ignored by the serial
        engine, where a crash ends this process.
    progress : bool
        A tqdm bar over grid points (advanced per finished chunk).
    address : str, optional
        Ray: the cluster to connect to (passed to ``ray.init(address=...)``, e.g.
        ``"auto"`` or ``"ray://head:10001"``). Without it and without a running Ray, a
        local Ray is started.
    num_cpus : int, optional
        Ray: CPUs of the local Ray started by the sweep (all cores when None).
    ray_init : dict, optional
        Ray: further ``ray.init`` keywords (``runtime_env=``, ``log_to_driver=``...). Only
        used when the sweep starts or connects Ray itself.
    ray_options : dict, optional
        Ray: task options (``num_cpus=`` per task, default 1; ``num_gpus=``,
        ``resources=``, ``scheduling_strategy=``), passed to ``.options()``.
    keep_ray : bool
        Ray: leave a Ray that the sweep started or connected running (later sweeps then
        skip the start-up). A Ray that was already initialized is never shut down.

    Returns
    -------
    list
        One result per grid point, in grid order (with ``on_error="return"``, the exception
        object where a point failed). Ray results are the unpickled worker results: for
        :class:`neurosolve.Result` the same arrays, status, certificate, history and
        counters as the serial engine (times differ).

    Raises
    ------
    SweepError
        ``on_error="raise"`` and a point failed.
    ImportError
        ``engine="ray"`` without Ray installed (the message names the extra).
    ValueError, TypeError
        An unknown ``engine`` or ``on_error``, an empty grid, a bad ``chunksize`` or
        ``max_retries``, a ``fn_or_spec`` that is neither callable nor a spec, Ray-only
        arguments with the serial engine, ``num_cpus`` together with ``address``.

    Notes
    -----
    Per Ray task the driver sends the chunk's points plus a reference to the pickled
    ``fn`` and receives the chunk's results (for a :class:`neurosolve.Result`, ``x``, the
    history, the certificate and the final solver state; ``docs/sweeps.md`` lists measured
    sizes). The worker pickles a chunk's results itself and the driver unpickles them, so
    arrays come back writable and owned by this process (not read-only views of Ray's
    shared memory) and outlive the Ray session. A worker starts with one BLAS/OpenMP thread per task CPU (Ray sets
    ``OMP_NUM_THREADS``), so numbers may differ in the last bits from a serial run with
    multithreaded BLAS on large arrays.

    References
    ----------
    .. [1] P. Moritz, R. Nishihara, S. Wang, A. Tumanov, R. Liaw, E. Liang, M. Elibol,
       Z. Yang, W. Paul, M. I. Jordan, I. Stoica, "Ray: A Distributed Framework for
       Emerging AI Applications", OSDI 2018.

    Examples
    --------
    >>> import numpy as np, neurosolve as ns
    >>> def solve_2x2(point):
    ...     A = np.array([[4.0, 1.0], [1.0, point["d"]]])
    ...     return ns.cg(A, np.ones(2), rtol=1e-10)
    >>> results = ns.sweep(solve_2x2, {"d": [3.0, 5.0, 8.0]}, progress=False)
    >>> [r.status.name for r in results]
    ['CONVERGED', 'CONVERGED', 'CONVERGED']
    >>> ns.sweep(lambda p: 1 / p, [1, 0, 4], on_error="return", progress=False)[1]
    ZeroDivisionError('division by zero')
    """
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    if on_error not in _ON_ERROR:
        raise ValueError(f"on_error must be one of {_ON_ERROR}, got {on_error!r}")
    chunksize = _check_int("chunksize", chunksize, 1)
    max_retries = _check_int("max_retries", max_retries, 0)
    for name, flag in (("warm_start", warm_start), ("keep_state", keep_state),
                       ("keep_ray", keep_ray), ("progress", progress)):
        if not isinstance(flag, bool):
            raise TypeError(f"{name} must be True or False, got {flag!r}")
    if num_cpus is not None:
        _check_int("num_cpus", num_cpus, 1)
    if engine == "serial":
        given = [n for n, v in (("address", address), ("num_cpus", num_cpus),
                                ("ray_init", ray_init), ("ray_options", ray_options)) if v]
        if given:
            raise ValueError(f"{given[0]}= applies to engine='ray' only (engine='serial' "
                             "runs in this process)")
    elif address is not None and num_cpus is not None:
        raise ValueError("num_cpus= sizes a local Ray that the sweep starts; it cannot be "
                         "combined with address= (the cluster has its own resources)")
    call = _as_call(fn_or_spec)
    points = expand_grid(grid)
    indexed = list(enumerate(points))
    chunks = [indexed[i:i + chunksize] for i in range(0, len(indexed), chunksize)]

    results: list = [None] * len(points)
    failures: list[SweepFailure] = []

    def store(chunk, out):
        for (i, point), entry in zip(chunk, out):
            results[i] = entry[1]
            if not entry[0]:
                failures.append(SweepFailure(i, point, entry[1], entry[2]))

    bar = _bar(progress, len(points), engine)
    try:
        if engine == "serial":
            _serial(call, chunks, warm_start, keep_state, bar, store)
        else:
            _ray(call, chunks, warm_start, keep_state, bar, store, max_retries=max_retries,
                 address=address, num_cpus=num_cpus, ray_init=ray_init,
                 ray_options=ray_options, keep_ray=keep_ray)
    finally:
        bar.close()
    if failures and on_error == "raise":
        raise SweepError(sorted(failures, key=lambda f: f.index), results)
    return results
