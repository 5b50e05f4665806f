"""How the dashboard's cards word a value."""

from __future__ import annotations

import pytest

from web.view import iaq_text


@pytest.mark.parametrize(("index", "text"), [(0.0, "0 · good"), (50.0, "50 · good"), (50.2, "51 · moderate"),
                                             (150.0, "150 · moderate"), (150.01, "151 · unhealthy for sensitive groups"),
                                             (312.4, "313 · hazardous")])
def test_an_iaq_index_is_shown_in_the_band_it_is_in(index: float, text: str) -> None:
    assert iaq_text(index)[0] == text
