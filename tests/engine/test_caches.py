"""The byte-bounded LRU behind the verdict and template caches: what it keeps, what it evicts, what it refuses."""

from __future__ import annotations

import threading

from pipelex_server.engine.caches import ByteLRU
from pipelex_server.engine.templates import TEMPLATE_BYTES_PER_SOURCE_CHAR, TEMPLATE_ENTRY_OVERHEAD_BYTES, estimated_template_bytes
from pipelex_server.engine.validation import verdict_bytes


def test_evicts_the_least_recently_used_until_the_bytes_fit():
    cache = ByteLRU(max_bytes=100)
    assert cache.put("a", "A", 40) and cache.put("b", "B", 40)
    assert cache.get("a") == "A"  # a is now more recent than b
    assert cache.put("c", "C", 40)
    assert "b" not in cache and cache.get("a") == "A" and cache.get("c") == "C"
    assert cache.bytes == 80 and len(cache) == 2


def test_evicts_as_many_entries_as_it_takes():
    cache = ByteLRU(max_bytes=100)
    for key in "abcde":
        cache.put(key, key, 20)
    assert cache.bytes == 100
    cache.put("big", "big", 90)
    assert list(key for key in "abcde" if key in cache) == []
    assert cache.bytes == 90 and len(cache) == 1


def test_an_entry_larger_than_the_budget_is_not_cached_and_evicts_nothing():
    cache = ByteLRU(max_bytes=100)
    cache.put("a", "A", 60)
    assert cache.put("huge", "H", 101) is False
    assert "huge" not in cache and cache.get("a") == "A" and cache.bytes == 60
    assert cache.put("exact", "E", 100) is True  # the whole budget is allowed
    assert len(cache) == 1 and cache.bytes == 100


def test_both_bounds_hold():
    cache = ByteLRU(max_bytes=1000, max_entries=2)
    for key in "abc":
        cache.put(key, key, 1)
    assert len(cache) == 2 and "a" not in cache
    cache.resize(max_bytes=1, max_entries=2)
    assert len(cache) == 1 and "c" in cache and cache.bytes == 1


def test_putting_a_key_again_replaces_its_size():
    cache = ByteLRU(max_bytes=100)
    cache.put("a", "A1", 70)
    cache.put("a", "A2", 30)
    assert cache.get("a") == "A2" and cache.bytes == 30 and len(cache) == 1
    cache.put("a", "A3", 200)  # too big now: the old value is gone too, not kept stale
    assert "a" not in cache and cache.bytes == 0


def test_a_zero_budget_disables_the_cache():
    assert ByteLRU(max_bytes=0).put("a", "A", 0) is False
    assert not ByteLRU(max_bytes=0).enabled and not ByteLRU(max_bytes=1, max_entries=0).enabled
    assert ByteLRU(max_bytes=100, max_entries=0).put("a", "A", 1) is False
    cache = ByteLRU(max_bytes=100)
    cache.put("a", "A", 10)
    cache.clear()
    assert len(cache) == 0 and cache.bytes == 0


def test_the_accounting_stays_exact_under_threads():
    cache = ByteLRU(max_bytes=5000, max_entries=300)

    def work(offset: int) -> None:
        for index in range(2000):
            key = (offset + index) % 700
            if cache.get(key) is None:
                cache.put(key, key, 1 + key % 37)

    threads = [threading.Thread(target=work, args=(offset,)) for offset in range(0, 700, 100)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert cache.bytes == sum(1 + key % 37 for key in range(700) if key in cache)
    assert cache.bytes <= 5000 and len(cache) <= 300


def test_a_verdict_weighs_its_compact_json():
    verdict = {"success": True, "message": "é ok", "errors": []}
    assert verdict_bytes(verdict) == len('{"success":true,"message":"é ok","errors":[]}'.encode())


def test_a_template_weighs_its_environment_plus_its_source():
    assert estimated_template_bytes("") == TEMPLATE_ENTRY_OVERHEAD_BYTES
    assert estimated_template_bytes("x" * 1000) == TEMPLATE_ENTRY_OVERHEAD_BYTES + 1000 * TEMPLATE_BYTES_PER_SOURCE_CHAR
