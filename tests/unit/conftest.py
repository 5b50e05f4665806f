"""Fixtures shared by unit tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from gpiozero.pins.mock import MockFactory, MockPWMPin


@pytest.fixture
def factory() -> Iterator[MockFactory]:
    """gpiozero's own mock pin factory (PWM-capable pins), reset and closed after the test."""
    pin_factory = MockFactory(pin_class=MockPWMPin)
    yield pin_factory
    pin_factory.reset()
    pin_factory.close()
