"""The marker rules of tests/conftest.py, on small suites run in-process by ``pytester``:
PostgreSQL tests are marked ``postgres`` whatever way they reach it, and a test that starts a
process without ``slow`` fails."""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings

CONFTEST = """
import pytest
from tests.conftest import processes_need_slow, pytest_collection_modifyitems

@pytest.fixture(params=["file", pytest.param("postgres", marks=pytest.mark.postgres)])
def backend(request):
    return request.param

@pytest.fixture
def store(backend):
    return backend

@pytest.fixture
def pg_schemas():
    return "schemas"

@pytest.fixture
def url(pg_schemas):
    return pg_schemas
"""

INI = """
[pytest]
addopts = --strict-markers
markers =
    slow: processes
    postgres: PostgreSQL
"""


@pytest.fixture
def suite(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makeconftest(CONFTEST)
    pytester.makeini(INI)
    return pytester


def test_every_way_of_reaching_postgresql_is_marked(suite: pytest.Pytester) -> None:
    suite.makepyfile(
        test_pg="""
        def test_on_both_stores(store): pass
        def test_with_schemas(pg_schemas): pass
        def test_through_another_fixture(url): pass
        def test_in_process(): pass
        """
    )
    quick = suite.runpytest_inprocess("-m", "not postgres", "-v")
    quick.assert_outcomes(passed=2, deselected=3)
    quick.stdout.fnmatch_lines(["*test_on_both_stores?file? PASSED*", "*test_in_process PASSED*"])
    pg = suite.runpytest_inprocess("-m", "postgres", "-v")
    pg.assert_outcomes(passed=3, deselected=2)
    pg.stdout.fnmatch_lines(
        [
            "*test_on_both_stores?postgres? PASSED*",
            "*test_with_schemas PASSED*",
            "*test_through_another_fixture PASSED*",
        ]
    )


@pytest.mark.slow
def test_a_process_test_without_slow_fails(suite: pytest.Pytester) -> None:
    suite.makepyfile(
        test_procs="""
        import multiprocessing, subprocess, sys
        import pytest

        def test_unmarked_subprocess():
            subprocess.run([sys.executable, "-c", "pass"], check=True)

        def test_unmarked_multiprocessing():
            p = multiprocessing.get_context("spawn").Process(target=print)
            p.start()
            p.join()

        @pytest.mark.slow
        def test_marked_subprocess():
            subprocess.run([sys.executable, "-c", "pass"], check=True)

        def test_no_process():
            pass
        """
    )
    result = suite.runpytest_inprocess("-v")
    result.assert_outcomes(passed=4, errors=2)
    result.stdout.fnmatch_lines(
        [
            "*test_unmarked_subprocess starts a process (subprocess *) but is not marked slow*",
            "*test_unmarked_multiprocessing starts a process (multiprocessing *)*not marked slow*",
        ]
    )
    assert "test_marked_subprocess starts" not in result.stdout.str()
    assert "test_no_process starts" not in result.stdout.str()
    quick = suite.runpytest_inprocess("-m", "not slow")
    quick.assert_outcomes(passed=3, errors=2, deselected=1)


def test_the_ci_hypothesis_profile() -> None:
    """Registered in tests/conftest.py; loaded when CI is set (or HYPOTHESIS_PROFILE=ci)."""
    profile = settings.get_profile("ci")
    assert profile.deadline is None and profile.derandomize and profile.database is None
    assert HealthCheck.too_slow in profile.suppress_health_check
    chosen = os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") else "dev")
    assert settings.default == settings.get_profile(chosen)
