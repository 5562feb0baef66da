"""Tests for the requirement language (parsing, canonical strings) and host matching."""
from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mpipipe.errors import MpipipeError, RequirementError
from mpipipe.requirements import (
    ACCELERATOR_KINDS,
    AcceleratorRequest,
    AcceleratorSpecification,
    CPUSpecification,
    CudaSpecification,
    HostRequirement,
    HostSimpleRequirement,
    HostSpecification,
    MPSSpecification,
    RequirementSyntaxError,
    format_duration,
    format_size,
    parse,
    to_requirement,
)

KiB, MiB, GiB, TiB = 1024, 1024**2, 1024**3, 1024**4
H = 3600.0


def simple(text: str) -> HostSimpleRequirement:
    (alternative,) = parse(text).alternatives
    return alternative


# --- parsing the documented examples -------------------------------------------------------


def test_example_big_training_job() -> None:
    assert parse("duration=40h & cpu(mem=700GiB) & cuda(mem=32GiB) * 8") == HostRequirement((
        HostSimpleRequirement(40 * H, CPUSpecification(memory=700 * GiB), (AcceleratorRequest("cuda", 32 * GiB, 8),)),
    ))


def test_example_alternatives() -> None:
    r = parse("duration=4h & cuda(mem=8GiB) | duration=4h & mps(mem=8GiB)")
    assert r.alternatives == (
        HostSimpleRequirement(4 * H, CPUSpecification(), (AcceleratorRequest("cuda", 8 * GiB, 1),)),
        HostSimpleRequirement(4 * H, CPUSpecification(), (AcceleratorRequest("mps", 8 * GiB, 1),)),
    )


def test_example_generic_gpu() -> None:
    r = simple("duration=2h & gpu(mem=4GiB)")
    assert r.duration == 7200.0 and r.cpu == CPUSpecification()
    assert r.accelerators == (AcceleratorRequest("gpu", 4 * GiB, 1),)


def test_example_cpu_only() -> None:
    r = simple("cpu(mem=4GiB, cores=2)")
    assert r == HostSimpleRequirement(0.0, CPUSpecification(cores=2, memory=4 * GiB), ())
    assert isinstance(r.cpu.memory, int) and isinstance(r.cpu.cores, int) and isinstance(r.duration, float)


def test_whitespace_and_case_insensitive() -> None:
    assert parse(" duration = 4 h&CUDA ( mem = 8 gib )*2\n|\tcpu ") == parse("duration=4h & cuda(mem=8GiB) * 2 | cpu")


def test_bare_terms_and_empty_arguments() -> None:
    assert (simple("gpu * 2") == simple("gpu() * 2")
            == HostSimpleRequirement(accelerators=(AcceleratorRequest("gpu", 0, 2),)))
    assert simple("cpu") == simple("cpu()") == HostSimpleRequirement()
    assert simple("cpu(mem=1GiB,)") == simple("cpu(mem=1GiB)")


def test_accelerator_requests_are_normalized() -> None:
    assert simple("cuda(mem=8GiB) & cuda(mem=8GiB)") == simple("cuda(mem=8GiB) * 2")
    assert simple("gpu & cuda(mem=1GiB) & mps & cuda(mem=2GiB)").accelerators == (
        AcceleratorRequest("cuda", 2 * GiB), AcceleratorRequest("cuda", 1 * GiB),
        AcceleratorRequest("mps"), AcceleratorRequest("gpu"))


# --- units ----------------------------------------------------------------------------------


@pytest.mark.parametrize("text, size", [
    ("8", 8), ("8B", 8), ("0", 0), ("1K", 1000), ("1KB", 1000), ("1kb", 1000), ("1KiB", KiB), ("1kib", KiB),
    ("2M", 2 * 10**6), ("2MB", 2 * 10**6), ("2MiB", 2 * MiB), ("3G", 3 * 10**9), ("3gb", 3 * 10**9),
    ("3GiB", 3 * GiB), ("1T", 10**12), ("1TB", 10**12), ("1TiB", TiB), ("1.5GiB", 3 * GiB // 2),
    ("0.5K", 500), (".5KiB", 512), ("1.0001K", 1001),  # a fractional byte rounds up
])
def test_size_units(text: str, size: int) -> None:
    assert simple(f"cpu(mem={text})").cpu.memory == size
    assert simple(f"cuda(mem={text})").accelerators[0].memory == size


@pytest.mark.parametrize("text, seconds", [
    ("30s", 30), ("30sec", 30), ("30secs", 30), ("1second", 1), ("30seconds", 30),
    ("5m", 300), ("5min", 300), ("5mins", 300), ("1minute", 60), ("5minutes", 300),
    ("4h", 4 * H), ("1hour", H), ("4hours", 4 * H), ("4H", 4 * H), ("2d", 2 * 86400), ("1day", 86400),
    ("2days", 2 * 86400), ("0.5h", 1800), ("1.5 h", 5400), ("0.1s", 0.1), ("0.7h", 2520),
])
def test_duration_units(text: str, seconds: float) -> None:
    assert simple(f"duration={text}").duration == seconds


@pytest.mark.parametrize("size, text", [
    (32 * GiB, "32GiB"), (700 * GiB, "700GiB"), (8 * 10**9, "8GB"), (1536 * MiB, "1536MiB"),
    (1000, "1KB"), (1024, "1KiB"), (4 * TiB, "4TiB"), (1023, "1023"), (0, "0"), (3 * GiB + 1, str(3 * GiB + 1)),
])
def test_format_size(size: int, text: str) -> None:
    assert format_size(size) == text


@pytest.mark.parametrize("seconds, text", [
    (14400, "4h"), (144000, "40h"), (5400, "90m"), (172800, "2d"), (45, "45s"), (3601, "3601s"),
    (0.5, "0.5s"), (1e-5, "0.00001s"), (1800.0, "30m"),
])
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


def test_canonical_strings() -> None:
    assert str(parse("duration=40h&cpu(cores=2,mem=700GiB)&cuda(mem=32GiB)*8")) == \
        "duration=40h & cpu(mem=700GiB, cores=2) & cuda(mem=32GiB) * 8"
    assert str(parse("duration=1.5h & gpu | cpu()")) == "duration=90m & gpu | cpu"
    assert str(parse("duration = 86400 s")) == "duration=1d"


# --- malformed strings ----------------------------------------------------------------------


@pytest.mark.parametrize("text, position, fragment", [
    ("", 0, "expected a term such as duration=4h"),
    ("cuda(mem=abc)", 9, "expected a size such as 8GiB"),
    ("cuda(mem=-8GiB)", 9, "expected a size such as 8GiB"),
    ("tpu(mem=8GiB)", 0, "unknown term 'tpu'"),
    ("cpu(memory=4GiB)", 4, "unknown key 'memory' for cpu: valid keys are mem, cores"),
    ("cuda(cores=2)", 5, "unknown key 'cores' for cuda: valid keys are mem"),
    ("cpu(mem=1GiB, mem=2GiB)", 14, "key 'mem' given twice"),
    ("cuda(mem=8GiB) * 0", 17, "a device count must be at least 1"),
    ("cuda * 1000000000", 7, "a device count must be at most 1024"),
    ("cuda * -1", 7, "expected a device count such as 2"),
    ("cuda * 1.5", 7, "expected a device count such as 2"),
    ("cuda *", 6, "expected a device count such as 2"),
    ("cpu(cores=0)", 10, "a number of cores must be at least 1"),
    ("cpu(cores=2.5)", 10, "expected a number of cores such as 4"),
    ("duration=4h & cpu & duration=5h", 20, "duration given twice in one alternative"),
    ("cpu(cores=1) & cpu(mem=1GiB)", 15, "cpu given twice"),
    ("duration=4", 10, "expected a duration unit"),
    ("duration=4y", 10, "unknown unit 'y'"),
    ("duration=h", 9, "expected a duration such as 4h"),
    ("duration=0h", 9, "a duration must be positive"),
    ("duration 4h", 9, "expected '=' after duration"),
    ("cuda(mem=8XB)", 10, "unknown unit 'XB'"),
    ("cpu(mem=8 cores=2)", 10, "expected ',' before cores"),
    ("cuda(mem=8GiB", 13, "expected ',' or ')'"),
    ("duration=4h &", 13, "expected a term"),
    ("duration=4h | | cpu", 14, "expected a term"),
    ("duration=4h cpu", 12, "expected '&', '|' or the end"),
    ("cpu) ", 3, "expected '&', '|' or the end"),
    ("(cuda | mps)", 0, "expected a term"),
    ("cuda(mem=1e5)", 10, "unknown unit 'e5'"),
])
def test_malformed(text: str, position: int, fragment: str) -> None:
    with pytest.raises(RequirementError) as caught:
        parse(text)
    error = caught.value
    assert isinstance(error, RequirementSyntaxError) and isinstance(error, MpipipeError)
    first, shown, caret = str(error).split("\n")
    assert fragment in first
    assert error.position == position
    assert shown == "  " + text
    assert caret == "  " + " " * position + "^"


def test_caret_stays_aligned_with_newlines_and_tabs() -> None:
    with pytest.raises(RequirementSyntaxError) as caught:
        parse("cpu &\n\ttpu")
    _, shown, caret = str(caught.value).split("\n")
    assert shown == "  cpu &  tpu" and caret.index("^") == shown.index("tpu")


def test_invalid_values_in_constructors() -> None:
    for build in (
        lambda: AcceleratorRequest("tpu"), lambda: AcceleratorRequest("cuda", count=0),
        lambda: AcceleratorRequest("cuda", memory=-1), lambda: CPUSpecification(cores=-1),
        lambda: HostRequirement(()), lambda: HostSimpleRequirement(duration=-1),
        lambda: HostSimpleRequirement(duration=math.inf),
        lambda: HostSpecification(CPUSpecification(), max_duration=-1),
        lambda: simple("cpu").multiply_duration(0), lambda: to_requirement(42),  # type: ignore[arg-type]
    ):
        with pytest.raises(RequirementError):
            build()


# --- round trip (property-based) ------------------------------------------------------------

sizes = st.one_of(
    st.integers(0, 2**50),
    st.builds(lambda n, unit: n * unit, st.integers(0, 4096), st.sampled_from([KiB, MiB, GiB, TiB, 1000, 10**9])),
)
durations = st.one_of(
    st.just(0.0),
    st.integers(1, 10**8).map(float),
    st.builds(lambda n, unit: float(n * unit), st.integers(1, 1000), st.sampled_from([60, 3600, 86400])),
    st.floats(min_value=0, exclude_min=True, allow_nan=False, allow_infinity=False),
)
accelerator_requests = st.builds(AcceleratorRequest, st.sampled_from(ACCELERATOR_KINDS), sizes, st.integers(1, 64))
simple_requirements = st.builds(
    HostSimpleRequirement, durations, st.builds(CPUSpecification, st.integers(0, 512), sizes),
    st.lists(accelerator_requests, max_size=4).map(tuple))
requirements = st.lists(simple_requirements, min_size=1, max_size=4).map(lambda a: HostRequirement(tuple(a)))


@settings(max_examples=400)
@given(requirements)
def test_round_trip(requirement: HostRequirement) -> None:
    text = str(requirement)
    assert parse(text) == requirement
    assert str(parse(text)) == text
    assert parse(text.replace(" ", "")) == requirement


@given(simple_requirements)
def test_round_trip_simple(requirement: HostSimpleRequirement) -> None:
    assert parse(str(requirement)) == HostRequirement((requirement,))


@given(st.text(alphabet=st.sampled_from(list("()=,&|*. -0123456789abcdeghimnpsuGiBKMT\n")) | st.characters(),
               max_size=40))
def test_arbitrary_text_parses_or_raises_requirement_error(text: str) -> None:
    try:
        requirement = parse(text)
    except RequirementSyntaxError as error:
        assert 0 <= error.position <= len(text)
    else:
        assert parse(str(requirement)) == requirement


# --- operators and helpers ------------------------------------------------------------------


def test_operators() -> None:
    a, b = simple("duration=4h & cuda(mem=8GiB)"), simple("duration=4h & mps(mem=8GiB)")
    assert a | b == parse("duration=4h & cuda(mem=8GiB) | duration=4h & mps(mem=8GiB)")
    assert simple("duration=2h & cpu(cores=4)") & simple("duration=4h & cpu(mem=1GiB) & gpu") == \
        simple("duration=4h & cpu(mem=1GiB, cores=4) & gpu")
    assert parse("cuda | mps") & parse("duration=4h") == parse("duration=4h & cuda | duration=4h & mps")
    assert simple("cuda") & simple("cuda") == simple("cuda * 2")


def test_to_requirement() -> None:
    r = simple("cuda")
    assert to_requirement("cuda") == to_requirement(r) == to_requirement(HostRequirement((r,))) == HostRequirement((r,))


def test_multiply_duration() -> None:
    r = parse("duration=4h & cuda | duration=30m & cpu")
    assert r.multiply_duration(2) == parse("duration=8h & cuda | duration=1h & cpu")
    assert r.multiply_duration(1.5).alternatives[1].duration == 2700.0
    assert r == parse("duration=4h & cuda | duration=30m & cpu")  # unchanged: values are frozen
    assert simple("cpu").multiply_duration(3).duration == 0.0  # unspecified stays unspecified


# --- matching -------------------------------------------------------------------------------


def host(*devices: AcceleratorSpecification, cores: int = 16, memory: int = 64 * GiB,
         max_duration: float = 0, priority: int = 0) -> HostSpecification:
    return HostSpecification(CPUSpecification(cores, memory), devices, max_duration, priority)


def test_specifications() -> None:
    assert CudaSpecification(8 * GiB).kind == "cuda" and not CudaSpecification(8 * GiB).unified_memory
    assert MPSSpecification(memory=8 * GiB).kind == "mps" and MPSSpecification(8 * GiB).unified_memory


def test_needs_distinct_devices() -> None:
    r = parse("cuda(mem=8GiB) * 2")
    assert r.match(host(CudaSpecification(40 * GiB))) is None
    found = r.match(host(CudaSpecification(40 * GiB), CudaSpecification(16 * GiB)))
    assert found is not None and sorted(found.devices) == [(0,), (1,)]  # one device per entry
    assert parse("cuda * 3").match(host(CudaSpecification(GiB), CudaSpecification(GiB))) is None
    assert parse("cuda * 1024").match(host(CudaSpecification(GiB))) is None


def test_memory_per_device() -> None:
    r = parse("cuda(mem=32GiB) * 2")
    assert r.match(host(CudaSpecification(40 * GiB), CudaSpecification(16 * GiB))) is None
    found = r.match(host(CudaSpecification(40 * GiB), CudaSpecification(16 * GiB), CudaSpecification(32 * GiB)))
    assert found is not None and sorted(found.devices) == [(0,), (2,)]


@pytest.mark.parametrize("order", [(40, 16), (16, 40)])
def test_assignment_keeps_big_devices_for_big_requests(order: tuple[int, int]) -> None:
    h = host(*(CudaSpecification(m * GiB) for m in order))
    found = parse("cuda(mem=8GiB) * 1 & cuda(mem=32GiB) * 1").match(h)
    assert found is not None
    big, small = found.requirement.accelerators  # normalized: decreasing memory
    assert big.memory == 32 * GiB
    (big_device,), (small_device,) = found.devices
    assert h.accelerators[big_device].memory == 40 * GiB and h.accelerators[small_device].memory == 16 * GiB


def test_cpu_cores_and_memory() -> None:
    h = host(cores=4, memory=16 * GiB)
    assert parse("cpu(cores=4, mem=16GiB)").match(h) is not None
    assert parse("cpu(cores=5)").match(h) is None
    assert parse("cpu(mem=17GiB)").match(h) is None
    assert parse("cpu(mem=1GiB)").match(host(cores=0, memory=0)) is None  # a host declaring nothing offers nothing


def test_mps_unified_memory() -> None:
    mac = host(MPSSpecification(16 * GiB), memory=16 * GiB)
    assert parse("cpu(mem=8GiB) & mps(mem=8GiB)").match(mac) is not None
    assert parse("cpu(mem=10GiB) & mps(mem=8GiB)").match(mac) is None  # 18GiB > 16GiB shared
    assert parse("mps(mem=17GiB)").match(mac) is None
    assert parse("cpu(mem=10GiB) & gpu(mem=8GiB)").match(mac) is None  # a generic gpu on mps is unified too
    assert parse("cuda").match(mac) is None
    nvidia = host(CudaSpecification(16 * GiB), memory=16 * GiB)
    assert parse("cpu(mem=10GiB) & cuda(mem=8GiB)").match(nvidia) is not None  # dedicated memory
    assert parse("mps").match(nvidia) is None


def test_generic_gpu() -> None:
    assert parse("gpu(mem=4GiB)").match(host(CudaSpecification(8 * GiB))) is not None
    assert parse("gpu(mem=4GiB)").match(host(MPSSpecification(64 * GiB))) is not None
    assert parse("gpu(mem=16GiB)").match(host(CudaSpecification(8 * GiB))) is None
    mixed = host(CudaSpecification(8 * GiB), MPSSpecification(64 * GiB))
    found = parse("gpu(mem=4GiB)").match(mixed)
    assert found is not None and found.devices == ((0,),)  # dedicated memory preferred
    # the specific request must not lose its only device to the generic one
    found = parse("gpu(mem=8GiB) & cuda(mem=8GiB)").match(mixed)
    assert found is not None and found.devices == ((0,), (1,))


def test_duration_limit() -> None:
    assert parse("duration=4h").match(host(max_duration=4 * H)) is not None
    assert parse("duration=5h").match(host(max_duration=4 * H)) is None
    assert parse("duration=500d").match(host()) is not None  # 0 = unlimited
    assert parse("cpu").match(host(max_duration=H)) is not None


def test_alternatives_pick_the_best() -> None:
    cuda_host, mac = host(CudaSpecification(16 * GiB)), host(MPSSpecification(64 * GiB))
    r = parse("duration=4h & cuda(mem=8GiB) | duration=4h & mps(mem=8GiB)")
    found = r.match(cuda_host)
    assert found is not None and found.requirement == r.alternatives[0]
    found = r.match(mac)
    assert found is not None and found.requirement == r.alternatives[1]
    two = host(CudaSpecification(16 * GiB), CudaSpecification(16 * GiB))
    found = parse("gpu(mem=4GiB) | gpu(mem=12GiB) * 2 | gpu(mem=12GiB)").match(two)
    assert found is not None and str(found.requirement) == "gpu(mem=12GiB) * 2"  # wastes least
    assert parse("cuda * 4 | mps").match(two) is None
    r = parse("duration=1h | duration=2h")
    found = r.match(host())
    assert found is not None and found.requirement == r.alternatives[0]  # ties keep the first


def test_tighter_time_limit_scores_higher() -> None:
    r = parse("duration=3h")
    short, long = r.match(host(max_duration=4 * H)), r.match(host(max_duration=48 * H))
    assert short is not None and long is not None and short.score > long.score


def test_score_uses_priority_first() -> None:
    r = parse("cpu(cores=16, mem=64GiB)")
    full = r.match(host(priority=0))
    preferred = r.match(host(cores=1024, memory=64 * TiB, priority=1))
    assert full is not None and preferred is not None
    assert 0 <= full.utilization < 1 and full.score == full.utilization
    assert preferred.score > full.score and 1 <= preferred.score < 2


def test_match_is_pure() -> None:
    h = host(CudaSpecification(16 * GiB), CudaSpecification(40 * GiB))
    r = parse("cuda(mem=8GiB) & cuda(mem=32GiB) | gpu")
    assert r.match(h) == r.match(h)


# --- matching (property-based): the greedy assignment is valid and complete -----------------

devices = st.builds(lambda kind, mem: AcceleratorSpecification(kind, mem * GiB),
                    st.sampled_from(["cuda", "mps", "rocm"]), st.integers(0, 8))
small_requests = st.builds(AcceleratorRequest, st.sampled_from(ACCELERATOR_KINDS),
                           st.integers(0, 8).map(lambda m: m * GiB), st.integers(1, 3))


@settings(max_examples=300)
@given(st.lists(devices, max_size=5), st.lists(small_requests, max_size=3))
def test_assignment_matches_brute_force(offered: list[AcceleratorSpecification],
                                        wanted: list[AcceleratorRequest]) -> None:
    h = host(*offered, memory=2**62)  # shared memory never binds: pure assignment question
    requirement = HostSimpleRequirement(accelerators=tuple(wanted))
    units = [r for r in requirement.accelerators for _ in range(r.count)]
    possible = any(all(u.accepts(offered[d]) for u, d in zip(units, chosen))
                   for chosen in itertools.permutations(range(len(offered)), len(units)))
    found = requirement.match(h)
    assert (found is not None) == possible
    if found is not None:
        used = [d for taken in found.devices for d in taken]
        assert len(used) == len(set(used)) == len(units)
        for request, taken in zip(requirement.accelerators, found.devices):
            assert len(taken) == request.count and all(request.accepts(offered[d]) for d in taken)
        assert 0 <= found.utilization < 1


# --- one entry per device, host defaults, the spellings of launcher files ------------------------------------


def test_accelerators_hold_one_entry_per_device() -> None:
    r = simple("cuda(mem=8GiB) * 3 & gpu * 2")
    assert len(r.accelerators) == 5 and all(a.count == 1 for a in r.accelerators)
    assert [a.kind for a in r.accelerators] == ["cuda"] * 3 + ["gpu"] * 2
    assert str(r) == "cuda(mem=8GiB) * 3 & gpu * 2"  # written grouped
    same = HostSimpleRequirement(accelerators=(AcceleratorRequest("gpu", 0, 2), CudaSpecification(8 * GiB),
                                               AcceleratorRequest("cuda", 8 * GiB, 2)))
    assert same == r  # counts and device specifications are spread out the same way
    found = r.match(host(*(CudaSpecification(16 * GiB) for _ in range(5))))
    assert found is not None and len(found.requirement.accelerators) == len(found.devices) == 5
    assert sorted(d for (d,) in found.devices) == [0, 1, 2, 3, 4]


def test_device_count_is_bounded() -> None:
    assert len(simple("cuda * 1024").accelerators) == 1024
    with pytest.raises(RequirementError, match="at most 1024"):
        HostSimpleRequirement(accelerators=(AcceleratorRequest("cuda", 0, 1000), AcceleratorRequest("gpu", 0, 25)))
    with pytest.raises(RequirementError, match="AcceleratorRequest"):
        HostSimpleRequirement(accelerators=("cuda",))  # type: ignore[arg-type]


def test_host_without_cpu_has_no_cpu_limit() -> None:
    no_gpu = HostSpecification(accelerators=[])
    assert parse("duration=900h & cpu(cores=4096, mem=64TiB)").match(no_gpu) is not None
    assert parse("cuda").match(no_gpu) is None
    found = parse("cpu(cores=2)").match(HostSpecification())
    assert found is not None and found.utilization == 0.0  # nothing declared, nothing to score
    assert HostSpecification(cpu=None).cpu == HostSpecification().cpu  # type: ignore[arg-type]
    limited = HostSpecification(cpu=CPUSpecification(cores=8, memory=16 * GiB))
    assert parse("cpu(cores=9)").match(limited) is None


def test_host_specification_keywords() -> None:
    h = HostSpecification(max_duration=3600, cpu=CPUSpecification(cores=4, memory=GiB),
                          accelerators=[CudaSpecification(memory=8 * GiB)], cuda=[CudaSpecification(memory=4 * GiB)])
    assert [d.memory for d in h.accelerators] == [8 * GiB, 4 * GiB] and isinstance(h.accelerators, tuple)
    assert parse("cuda(mem=4GiB) * 2 & duration=1h").match(h) is not None
    for build in (lambda: HostSpecification(cpu=4),  # type: ignore[arg-type]
                  lambda: HostSpecification(accelerators=["cuda"]),  # type: ignore[list-item]
                  lambda: AcceleratorSpecification(kind=""), lambda: AcceleratorSpecification(memory=-1),
                  lambda: AcceleratorSpecification("cuda", 1.5)):  # type: ignore[arg-type]
        with pytest.raises(RequirementError):
            build()


def test_generic_device_specification() -> None:
    assert AcceleratorSpecification(memory=8 * GiB) == AcceleratorSpecification(8 * GiB) == \
        AcceleratorSpecification("gpu", 8 * GiB)  # type: ignore[arg-type]
    assert CudaSpecification(memory=GiB).kind == "cuda" and AcceleratorSpecification("rocm", GiB).kind == "rocm"
    assert CudaSpecification(memory=24e9).memory == 24 * 10**9  # type: ignore[arg-type]
    generic = host(AcceleratorSpecification(memory=8 * GiB))
    assert parse("gpu(mem=8GiB)").match(generic) is not None
    assert parse("cuda").match(generic) is None and parse("mps").match(generic) is None
