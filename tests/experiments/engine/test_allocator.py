import os
import platform
import subprocess
import sys
import textwrap

import pytest

from idspn_experiments.engine import allocator

glibc = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's"
)

# A step allocates and writes three 4 MB tensors and frees them together, as a training
# step frees its temporaries. Prints the minor page faults of steps 11 to 20: by then the heap holds
# what a step needs (with glibc's own thresholds every step here faults in a few thousand pages).
STEPS = textwrap.dedent(
    """
    import resource, torch
    from idspn_experiments.engine.allocator import keep_freed_memory
    print(keep_freed_memory())
    def step():
        tensors = [torch.empty(n * 2**18).fill_(1.0) for n in (4, 4, 4)]
        del tensors
    for _ in range(10):
        step()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(10):
        step()
    print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    """
)


def run_steps(setting: str) -> tuple[bool, int]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    env[allocator.SETTING] = setting
    out = subprocess.run([sys.executable, "-c", STEPS], env=env, capture_output=True, text=True, check=True)
    kept, faults = out.stdout.split()
    return kept == "True", int(faults)


@glibc
def test_kept_memory_serves_every_step_without_page_faults():
    kept, faults = run_steps("keep")
    assert kept
    pages_of_one_step = 12 * 2**20 // os.sysconf("SC_PAGE_SIZE")
    assert faults < pages_of_one_step // 10  # 10 steps fault in less than a tenth of one step's pages


@glibc
def test_the_system_setting_leaves_malloc_as_it_is():
    kept, _ = run_steps("system")
    assert not kept


@pytest.mark.parametrize("value", ["keep", "KEEP", " keep ", ""])
def test_setting_keep_and_unset_read_as_keep(monkeypatch, value):
    monkeypatch.setenv(allocator.SETTING, value)
    assert allocator.malloc_setting() == "keep"


def test_a_bad_setting_is_refused_with_the_variable_and_the_choices(monkeypatch):
    monkeypatch.setenv(allocator.SETTING, "jemalloc")
    with pytest.raises(ValueError, match=r"IDSPN_MALLOC must be one of keep, system, got 'jemalloc'"):
        allocator.keep_freed_memory()


def test_the_environment_for_child_processes_holds_the_same_thresholds():
    assert allocator.ENVIRONMENT == {
        "MALLOC_MMAP_THRESHOLD_": str(allocator.MMAP_THRESHOLD),
        "MALLOC_TRIM_THRESHOLD_": str(allocator.TRIM_THRESHOLD),
    }
