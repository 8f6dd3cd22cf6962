"""Names the package's doctests may use: a running simulator, a session talking to it, and a
small dataframe — so every docstring example is a real call, run by the suite."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest


@pytest.fixture(scope="session")
def _doctest_simulator() -> Iterator[Any]:
    from kimi_magic.simulator import Simulator

    with Simulator(port=0) as sim:
        yield sim


@pytest.fixture(autouse=True)
def _doctest_names(request: pytest.FixtureRequest, doctest_namespace: dict[str, Any]) -> None:
    if not isinstance(request.node, pytest.DoctestItem):
        return
    import pandas as pd

    from kimi_magic import Session, Settings, Store

    sim = request.getfixturevalue("_doctest_simulator")
    settings = Settings(base_url=sim.url, api_key="sk-doctest-0123456789", retry_base=0.01)
    doctest_namespace.update(
        sim=sim,
        session=Session("doctest", settings, store=Store(":memory:")),
        df=pd.DataFrame({"city": ["Lyon", "Oslo"], "sales": [412, 388]}),
        texts=["The cat sat on the mat.", "The dog ate my homework."],
    )
