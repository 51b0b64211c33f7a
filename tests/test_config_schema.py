"""Schema-driven range checks: every config field is fed inputs it must refuse.

The invalid inputs are derived from each field's annotation and metadata as ``schema_fields()``
reports them: a wrong type, a value just beyond each bound, nan and inf for floats, an unknown
choice, a tuple of the wrong length, a too-short list or string; for a union, the members' invalid
inputs that no member accepts. A field added later is therefore covered without touching this file,
and a field whose type the derivation does not know fails loudly. Each input goes through ``vislang
config --set`` and must end with exit status 2 and one stderr line that names the field. With
``VISLANG_SCHEMA_TABLE=PATH`` the results are also written to PATH as a markdown table.
"""

from __future__ import annotations

import os
import re
import types
import typing
from dataclasses import astuple, dataclass, field
from pathlib import Path
from typing import Any, Literal

import annotated_types as at
import pytest
import yaml
from pydantic import BaseModel, TypeAdapter, ValidationError

from vislang.cli import main
from vislang.config import SourceConfig
from vislang.data.benchmark import DATASET_FORMATS
from vislang.data.labelled import LabelledSourceConfig
from vislang.experiment import schema_fields

FIELDS = list(schema_fields())
MAPPING = {"a": 1}  # a mapping where a scalar or a list belongs
NAN, INF = float("nan"), float("inf")
OMIT = object()  # overrides() without the field itself: the scaffold alone

# What must surround a field for the config to reach it: required fields next to it.
SOURCE = {"kind": "table", "path": "x.csv"}
RULE = {"match": "^model\\."}
STAGE = {"start_step": 1, "image_size": 64}  # a stage must change something
CIT = {"class_names": ["a"]}
TASK_REQUIRED = {"aro": {"kind": "vg_relation", "annotations": "a.json", "images": "i"}, "winoground": {"root": "w"}}
TASK_REQUIRED |= {"captioning": {"references": "c.json", "images": "i"}, "sugarcrepe": {"root": "s", "images": "i"}}
DATASET = {"retrieval": "karpathy"}  # a task's dataset section: the format it reads, else imagefolder
LABELLED = {"kind": "labelled", "dataset": "world"}
OBJECTIVE_REQUIRED = {"siglip": ["model.init_logit_bias=-10"]}
OBJECTIVE_REQUIRED |= {k: ["data.sources=[{kind: labelled, dataset: world}]"] for k in ("flyp", "classifier", "coop")}


@dataclass(frozen=True)
class Case:
    what: str  # why the value is invalid
    value: Any
    context: tuple[str, ...] = field(default=())  # further --set overrides the case needs


# Refusals that come from validators rather than from the annotation: orderings, pairs, regexes
# (keyed by field, or by "field [variant]" for one objective kind or task type only).
VALIDATOR_CASES: dict[str, list[Case]] = {
    "data.crop_scale": [Case("low above high", [1.0, 0.5]), Case("low 0", [0, 1]), Case("high above 1", [0.5, 1.5])],
    "train.betas": [Case("beta 1", [0.9, 1.0]), Case("negative beta", [-0.1, 0.9])],
    "model.vision.image_std": [Case("std 0", [0.5, 0, 0.5]), Case("negative std", [-1, 1, 1])],
    "train.param_rules[].match": [Case("not a regular expression", "(")],
    "model.vision.heads": [Case("does not divide width 64", 3)],
    "model.text.heads": [Case("does not divide width 64", 3)],
    "model.preset": [Case("unknown preset", "no_such_preset")],
    "data.cit.templates": [Case("template without {}", ["a photo"]), Case("no template", [])],
    "objective.caption_weight": [Case("both weights 0", 0, ("objective.contrastive_weight=0",))],
    "train.accum_steps": [Case("above train.batch_size 128", 129)],
    "eval.tasks[].dataset [retrieval]": [Case("a format without captions", {"format": "imagefolder", "path": "x"})],
    "eval.tasks[].dataset.format": [Case("unknown format", "no_such_format")],
    "eval.tasks[].dataset.classnames": [Case("empty inline list", []), Case("blank name", [" "])]
    + [Case("names repeat", ["a", "a"]), Case("unknown shipped set", "no_such_set")],
    "eval.tasks[].dataset.templates": [Case("empty inline list", []), Case("template without {c}", ["a photo"])]
    + [Case("template does not format", ["a {c} {x}"]), Case("unknown shipped set", "no_such_set")],
    "eval.tasks[].dataset.prompts": [Case("descriptions without a descriptions file", "descriptions")],
    "eval.tasks[].ks": [Case("k 0", [0]), Case("negative k", [5, -1])],
    "eval.tasks[].shots": [Case("0 shots", [0]), Case("negative shots", [5, -1])],
    "eval.tasks[].seed": [Case("negative seed (numpy refuses it)", -1)],
}

# Numbers whose whole finite range is meaningful; any other number needs a bound or a validator case.
UNBOUNDED: dict[str, str] = {
    "model.init_logit_bias": "a logit bias may start anywhere (SigLIP: -10)",
    "model.vision.image_mean": "a normalisation mean may be any finite number",
}

# Cases that fail because of a defect in src (to be fixed there), with the reason. Each entry makes
# its field's test an expected failure while the problem lasts, and fails it once the problem is gone.
KNOWN_DEFECTS: dict[tuple[str, str], str] = {}
# Key prefixes whose one-line refusals do not name the field, with the reason (as KNOWN_DEFECTS).
MISNAMED: dict[str, str] = {}


# -- deriving invalid inputs from a field's type ---------------------------------------------------


def _strip(annotation: Any) -> Any:
    """``X | None`` -> X; ``Annotated[X, ...]`` -> X (its constraints are read by _constraints)."""
    if typing.get_origin(annotation) is typing.Annotated:
        return _strip(typing.get_args(annotation)[0])
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        rest = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(rest) == 1:
            return _strip(rest[0])
    return annotation


def _constraints(annotation: Any) -> list[Any]:
    """Constraints carried inside ``Annotated[X, ...]`` (a pydantic Field's flattened)."""
    if typing.get_origin(annotation) is typing.Annotated:
        inner, *extra = typing.get_args(annotation)
        return [m for item in extra for m in getattr(item, "metadata", [item])] + _constraints(inner)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return [m for a in typing.get_args(annotation) if a is not type(None) for m in _constraints(a)]
    return []


def _beyond(kind: type, constraints: list[Any]) -> list[Case]:
    """Values just outside each numeric bound (for Gt/Lt: the bound itself and one further)."""
    step = 1 if kind is int else 1e-3
    cases = []
    for bound in constraints:
        if isinstance(bound, at.Ge):
            cases.append(Case(f"below ge={bound.ge}", bound.ge - step))
        elif isinstance(bound, at.Gt):
            cases += [Case(f"at gt={bound.gt}", bound.gt), Case(f"below gt={bound.gt}", bound.gt - 1)]
        elif isinstance(bound, at.Le):
            cases.append(Case(f"above le={bound.le}", bound.le + step))
        elif isinstance(bound, at.Lt):
            cases += [Case(f"at lt={bound.lt}", bound.lt), Case(f"above lt={bound.lt}", bound.lt + 1)]
    return cases


def _valid(annotation: Any) -> Any:
    """A value the type accepts (the other elements of a tuple around an invalid one)."""
    kind, constraints = _strip(annotation), _constraints(annotation)
    if typing.get_origin(kind) is Literal:
        return typing.get_args(kind)[0]
    if kind is str:
        return "x"
    if kind in (int, float):
        low = max([astuple(b)[0] for b in constraints if isinstance(b, at.Ge | at.Gt)], default=0)
        high = min([astuple(b)[0] for b in constraints if isinstance(b, at.Le | at.Lt)], default=low + 2)
        return (low + high) / 2 if kind is float else low + 1
    raise NotImplementedError(f"no valid sample for {annotation}")


def invalid_inputs(
    annotation: Any, constraints: list[Any], pattern: str | None = None, default: Any = None
) -> list[Case]:
    """Every invalid input derivable from a type and its constraints (a tuple's other items: its
    default's, which are valid whatever validators it has)."""
    constraints = [*constraints, *_constraints(annotation)]
    kind = _strip(annotation)
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):  # what every member refuses
        members = [a for a in typing.get_args(kind) if a is not type(None)]
        found = {repr(c.value): c for m in members for c in invalid_inputs(m, constraints, pattern)}
        return [c for c in found.values() if not any(_accepts(m, constraints, c.value) for m in members)]
    if origin is Literal:
        return [Case("unknown choice", "no_such_choice"), Case("wrong type", MAPPING)]
    if kind is bool:  # pydantic reads 0/1, yes/no, on/off, true/false as booleans
        return [Case("not a boolean", "maybe"), Case("not a boolean", 2), Case("wrong type", MAPPING)]
    if kind is int:
        wrong = [Case("not a number", "abc"), Case("a fraction", 1.5), Case("wrong type", MAPPING)]
        return wrong + _beyond(int, constraints)
    if kind is float:  # pydantic reads an int as a float
        wrong = [Case("not a number", "abc"), Case("wrong type", MAPPING)]
        return wrong + _beyond(float, constraints) + [Case("not finite", v) for v in (NAN, INF, -INF)]
    if kind is str:
        cases = [Case("wrong type", MAPPING), Case("wrong type", [1, 2])]
        cases += _lengths(constraints, lambda n: "x" * n)
        if pattern is not None:
            wrong = next(v for v in ("tpu", "no such value", "") if not re.fullmatch(pattern, v))
            cases.append(Case("does not match the pattern", wrong))
        return cases
    if origin is dict:
        return [Case("wrong type", "abc"), Case("wrong type", [1])]
    if origin is tuple:
        items = typing.get_args(kind)
        if Ellipsis in items:
            raise NotImplementedError(f"variable-length tuple {kind}")
        fits = isinstance(default, tuple) and len(default) == len(items)
        valid = list(default) if fits else [_valid(a) for a in items]
        cases = [Case("wrong type", "abc"), Case(f"{len(items) - 1} of {len(items)} items", valid[:-1])]
        cases.append(Case(f"{len(items) + 1} of {len(items)} items", [*valid, valid[-1]]))
        for i, item in enumerate(items):  # each element's own invalid values, the others valid
            for case in invalid_inputs(item, []):
                cases.append(Case(f"item {i}: {case.what}", [*valid[:i], case.value, *valid[i + 1 :]]))
        return cases
    if origin is list:
        (item,) = typing.get_args(kind)
        cases = [Case("wrong type", "abc"), Case("wrong type", MAPPING)]
        if _section(item) is not None:
            cases.append(Case("item not a mapping", ["abc"]))
        else:
            cases += [Case(f"item: {c.what}", [c.value]) for c in invalid_inputs(item, [])]
        return cases + _lengths(constraints, lambda n: [_valid(item) for _ in range(n)])
    if _section(kind) is not None:  # an optional section
        return [Case("wrong type", "abc"), Case("wrong type", [1])]
    raise NotImplementedError(f"no invalid inputs known for {annotation}")


def _lengths(constraints: list[Any], make: typing.Callable[[int], Any]) -> list[Case]:
    """A string or list (``make(n)``: one of n items) one shorter than min_length, one longer than max_length."""
    short = [b.min_length for b in constraints if isinstance(b, at.MinLen) and b.min_length > 0]
    long = [b.max_length for b in constraints if isinstance(b, at.MaxLen)]
    cases = [Case(f"shorter than min_length={n}", make(n - 1)) for n in short]
    return cases + [Case(f"longer than max_length={n}", make(n + 1)) for n in long]


def _accepts(member: Any, constraints: list[Any], value: Any) -> bool:
    """Whether a union member (with the field's constraints, where they apply to it) takes value."""
    try:
        adapter = TypeAdapter(typing.Annotated[member, *constraints] if constraints else member)
    except Exception:  # a constraint for another member (a length on a number)
        adapter = TypeAdapter(member)
    try:
        adapter.validate_python(value)
    except ValidationError:
        return False
    return True


def _section(annotation: Any) -> type[BaseModel] | None:
    kind = _strip(annotation)
    return kind if isinstance(kind, type) and issubclass(kind, BaseModel) else None


def cases_for(key: str, variant: str, info) -> list[Case]:
    """The derived invalid inputs of a field, plus its validators' own cases."""
    pattern = next((m.pattern for m in info.metadata if getattr(m, "pattern", None)), None)
    try:
        derived = invalid_inputs(info.annotation, list(info.metadata), pattern, info.default)
    except NotImplementedError as error:
        pytest.fail(f"{key}: no invalid input can be derived for this field ({error}); teach this test the type")
    return derived + VALIDATOR_CASES.get(key, []) + VALIDATOR_CASES.get(f"{key} [{variant}]", [])


# -- reaching a field through --set ----------------------------------------------------------------


def _yaml(value: Any) -> str:
    return yaml.safe_dump(value, default_flow_style=True, width=10_000).strip().removesuffix("...").strip()


def _with(scaffold: dict[str, Any], name: str, value: Any) -> dict[str, Any]:
    return dict(scaffold) if value is OMIT else {**scaffold, name: value}


def _dataset(task: str, name: str) -> dict[str, Any]:
    """A valid dataset section of the task's format, or of the first format that has field ``name``."""
    formats = [DATASET.get(task, "imagefolder"), *DATASET_FORMATS]
    kind = next((f for f in formats if name in DATASET_FORMATS[f].model_fields), formats[0])
    return {"format": kind, "path": "x.json" if kind == "karpathy" else "x"}


def overrides(key: str, variant: str, value: Any = OMIT) -> list[str]:
    """The ``--set`` overrides that give field ``key`` (of ``variant``) ``value``; with OMIT, the
    overrides around it without the field."""
    if key.startswith("objective."):
        sets = [f"objective.kind={variant}", *OBJECTIVE_REQUIRED.get(variant, [])]
        return sets if value is OMIT else [*sets, f"{key}={_yaml(value)}"]
    if key.startswith("eval.tasks[]."):
        name = key.removeprefix("eval.tasks[].")
        task = {"type": variant, **TASK_REQUIRED.get(variant, {})}
        section, _, sub = name.partition(".")
        if section in ("source", "dataset") and sub:
            task[section] = _with(SOURCE if section == "source" else _dataset(variant, sub), sub, value)
        else:
            task = _with(task, name, value)
        return [f"eval.tasks={_yaml([task])}"]
    if key.startswith("data.sources[]."):
        name = key.removeprefix("data.sources[].")
        section, _, sub = name.partition(".")
        if section == "dataset" and sub:  # a labelled source's dataset section
            source = {**LABELLED, "dataset": _with(_dataset("zeroshot", sub), sub, value)}
        elif name in LabelledSourceConfig.model_fields and name not in SourceConfig.model_fields:
            source = _with(LABELLED, name, value)
        else:
            source = _with({"kind": "world"} if name == "path" else SOURCE, name, value)
        return [f"data.sources={_yaml([source])}"]
    if key.startswith("train.param_rules[]."):
        return [f"train.param_rules={_yaml([_with(RULE, key.removeprefix('train.param_rules[].'), value)])}"]
    if key.startswith("train.stages[]."):
        name = key.removeprefix("train.stages[].")
        stage = (
            _with(STAGE, name, value)
            if name != "image_size"
            else _with({"start_step": 1, "mask_ratio": 0.5}, name, value)
        )
        return [f"train.stages={_yaml([stage])}"]
    if key.startswith("data.cit."):
        return [f"data.cit={_yaml(_with(CIT, key.removeprefix('data.cit.'), value))}"]
    if "[]" in key:
        pytest.fail(f"{key}: this test does not know how to reach items of this list; add a scaffold for it")
    return [] if value is OMIT else [f"{key}={_yaml(value)}"]


def names_field(line: str, key: str) -> bool:
    """Whether the error line names the field: its dotted key (list indices aside), or a section
    above it with the field's name in the message."""
    match = re.match(r"vislang: error: (?:config: )?([^:\s]+): (.*)$", line)
    if match is None:
        return False
    reported = [p for p in match.group(1).split(".") if not p.isdigit()]
    wanted = key.replace("[]", "").split(".")
    if reported == wanted:
        return True
    named = re.search(rf"\b{re.escape(wanted[-1])}\b", match.group(2)) is not None
    return reported == wanted[: len(reported)] and named


def _config(sets: list[str], capsys) -> tuple[Any, str, str]:
    capsys.readouterr()
    try:
        code = main(["config", *[a for s in sets for a in ("--set", s)]])
    except SystemExit as error:  # argparse refusing the command line
        code = error.code
    except Exception as error:  # escaping main(): the user would see a traceback
        code = f"raised {type(error).__name__}: {error}"
    out = capsys.readouterr()
    return code, out.out, out.err


# -- the tests -------------------------------------------------------------------------------------

ROWS: list[tuple[str, str, str, str, str]] = []  # field, variant, what, --set, message


@pytest.fixture(scope="module", autouse=True)
def _table():
    yield
    path = os.environ.get("VISLANG_SCHEMA_TABLE")
    if not path or not ROWS:
        return
    cell = lambda text: text.replace("|", "\\|").replace("\n", " ")  # noqa: E731
    lines = ["| field | variant | invalid input | --set | message |", "|---|---|---|---|---|"]
    lines += [f"| `{k}` | {v} | {w} | `{cell(s)}` | {cell(m)} |" for k, v, w, s, m in ROWS]
    fields = len({(k, v) for k, v, *_ in ROWS})
    lines += ["", f"{fields} fields (objective fields per kind, task fields per type), {len(ROWS)} invalid inputs."]
    Path(path).write_text("\n".join(lines) + "\n", encoding="utf-8")


def test_every_field_gets_invalid_inputs():
    assert len(FIELDS) > 100, "schema_fields() walked fewer fields than the schema has"
    empty = [key for key, variant, info in FIELDS if not cases_for(key, variant, info)]
    assert not empty, f"fields without any invalid input: {empty}"
    known = {key for key, *_ in FIELDS} | {f"{key} [{variant}]" for key, variant, _ in FIELDS}
    cases = [*VALIDATOR_CASES, *UNBOUNDED, *(k for k, _ in KNOWN_DEFECTS)]
    stale = [key for key in cases if key.split(" [")[0] not in known]
    stale += [prefix for prefix in MISNAMED if not any(key.startswith(prefix) for key in known)]
    assert not stale, f"cases for fields the schema no longer has: {stale}"


def test_every_number_is_bounded():
    """A numeric field added without a bound fails here until it gets one (or a reason in UNBOUNDED)."""

    def numeric(annotation: Any) -> bool:
        kind = _strip(annotation)
        if typing.get_origin(kind) in (tuple, list):
            return any(numeric(a) for a in typing.get_args(kind) if a is not Ellipsis)
        return kind in (int, float)

    def bounded(key: str, info) -> bool:
        constraints = [*info.metadata, *_constraints(info.annotation)]
        return any(isinstance(m, at.Ge | at.Gt | at.Le | at.Lt) for m in constraints) or key in VALIDATOR_CASES

    loose = sorted({k for k, _, i in FIELDS if numeric(i.annotation) and not bounded(k, i) and k not in UNBOUNDED})
    assert not loose, f"numeric fields without a bound: {loose}"


def test_scaffolds_are_valid(capsys):
    """What surrounds each field is itself accepted, so a refusal below is the field's own."""
    for sets in sorted({tuple(overrides(key, variant)) for key, variant, _ in FIELDS}):
        code, _, err = _config(list(sets), capsys)
        assert code == 0, f"{sets}: {err.strip()}"


@pytest.mark.parametrize(("key", "variant", "info"), FIELDS, ids=[f"{k}[{v}]" if v else k for k, v, _ in FIELDS])
def test_invalid_values_are_refused_naming_the_field(key, variant, info, capsys):
    cases = cases_for(key, variant, info)
    assert cases, f"{key}: no invalid input; every field must have at least one"
    problems, known, seen = [], [], set()
    for case in cases:
        sets = [*case.context, *overrides(key, variant, case.value)]
        code, out, err = _config(sets, capsys)
        lines = err.splitlines()
        reason = KNOWN_DEFECTS.get((key, case.what))
        if code != 2 or len(lines) != 1 or out:
            problem = f"{case.what} {sets[-1]!r}: exit {code}, stderr {err!r}"
            message = code if isinstance(code, str) else f"exit {code}, stderr {err.strip()!r}"
        elif not names_field(lines[0], key):
            problem = f"{case.what} {sets[-1]!r}: the message does not name {key}: {lines[0]!r}"
            message = f"{lines[0]} (does not name the field)"
            reason = next((r for prefix, r in MISNAMED.items() if key.startswith(prefix)), None)
        else:
            problem, message = None, lines[0]
        if problem is not None:
            message = f"**FAILS: {message}**" + (f" (known defect: {reason})" if reason else "")
            (known if reason else problems).append(problem)
            seen.add(reason)
        ROWS.append((key, variant, case.what, " ".join(sets), message))
    assert not problems, f"{key} [{variant}]:\n  " + "\n  ".join(problems)
    expected = {r for (k, w), r in KNOWN_DEFECTS.items() if k == key and w in {c.what for c in cases}}
    expected |= {r for prefix, r in MISNAMED.items() if key.startswith(prefix)}
    assert expected <= seen, f"{key}: fixed, remove from KNOWN_DEFECTS: {sorted(expected - seen)}"
    if known:
        pytest.xfail("; ".join(sorted(expected)))
