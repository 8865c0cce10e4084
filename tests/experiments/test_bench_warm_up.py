"""`harness.warm_up`: warm-up calls continue while a call still faults in fresh heap pages."""

import mmap

import numpy as np

from experiments.benchmarks import harness


def _scripted(faults_per_call):
    """A call and a page-fault counter that advances by the scripted count on each call."""
    state = {"faults": 0, "calls": 0}

    def call():
        state["faults"] += faults_per_call[state["calls"]]
        state["calls"] += 1

    return call, (lambda: state["faults"]), state


def test_warm_up_stops_after_two_calls_in_a_row_that_do_not_grow_the_heap():
    # The shapes seen on a GAN iteration (a few faults, the heap grows once, then settles)
    # and on a BERT step (a quiet call, then one that grows the heap again).
    for faults, expected in (([18_176, 450_629, 0, 0, 0, 0], 4),
                             ([400_000, 0, 400_000, 0, 0, 0], 5)):
        call, counter, state = _scripted(faults)
        assert harness.warm_up(call, lambda result: result, page_faults=counter) == expected
        assert state["calls"] == expected


def test_warm_up_stops_after_two_calls_when_nothing_faults():
    call, counter, state = _scripted([harness.SETTLED_PAGE_FAULTS - 1, 0, 0])
    assert harness.warm_up(call, lambda result: result, page_faults=counter) == 2
    assert state["calls"] == 2


def test_warm_up_gives_up_after_max_calls():
    call, counter, state = _scripted([10 ** 6] * 10)
    assert harness.warm_up(call, lambda result: result, page_faults=counter, max_calls=4) == 4
    assert state["calls"] == 4


def test_the_real_counter_sees_fresh_pages_being_touched():
    pages = 4 * harness.SETTLED_PAGE_FAULTS
    before = harness._minor_page_faults()
    with mmap.mmap(-1, pages * mmap.PAGESIZE) as block:
        np.frombuffer(block, np.uint8)[::mmap.PAGESIZE] = 1   # one write per fresh page
    assert harness._minor_page_faults() - before >= pages
