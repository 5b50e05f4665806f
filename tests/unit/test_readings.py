import math

import pytest

from hal.errors import ReadingError
from hal.readings import QUANTITIES, Reading, unit_of


def test_reading_measured_takes_unit_from_table():
    r = Reading.measured("pi4", "dht22", "temperature", 21.5, ts=1000.0)
    assert r.unit == "°C" and r.value == 21.5 and r.quality == "ok" and r.ok


def test_reading_every_quantity_has_a_unit_and_a_range():
    for q in QUANTITIES.values():
        assert q.unit and q.low < q.high
        assert unit_of(q.name) == q.unit


@pytest.mark.parametrize("kwargs, message", [
    ({"quantity": "temprature"}, "unknown quantity"),
    ({"unit": "K"}, "measured in"),
    ({"value": math.nan}, "finite"),
    ({"value": math.inf}, "finite"),
    ({"value": True}, "must be a number"),
    ({"value": "21"}, "must be a number"),
    ({"value": 130.0}, "plausible range"),
    ({"ts": math.nan}, "ts must be"),
    ({"ts": "now"}, "ts must be"),
    ({"node": ""}, "node must match"),
    ({"sensor": "DHT 22"}, "sensor must match"),
    ({"quantity": ["temperature"]}, "quantity must be a string"),
    ({"reason": 5}, "reason must be"),
    ({"quality": "great"}, "quality must be"),
    ({"quality": "unavailable"}, "cannot carry a value"),
])
def test_reading_rejects_bad_fields(kwargs, message):
    base = {"node": "pi4", "sensor": "dht22", "quantity": "temperature", "value": 21.0, "unit": "°C", "ts": 1.0}
    base.update(kwargs)
    with pytest.raises(ReadingError, match=message):
        Reading(**base)


def test_reading_failed_has_no_value_and_a_reason():
    r = Reading.failed("pi4", "bme680", "pressure", 5.0, "chip id 0x00, expected 0x61")
    assert r.value is None and r.quality == "unavailable" and "chip id" in r.reason and not r.ok
    with pytest.raises(ReadingError, match="reason"):
        Reading("pi4", "bme680", "pressure", None, "hPa", 5.0, "unavailable", None)


def test_reading_round_trips_through_plain_dict():
    r = Reading.measured("pizero", "bme680", "iaq", 42.0, ts=7.5, quality="calibrating")
    d = r.to_dict()
    assert d == {"node": "pizero", "sensor": "bme680", "quantity": "iaq", "value": 42.0, "unit": "IAQ",
                 "ts": 7.5, "quality": "calibrating", "reason": None}
    assert Reading.from_dict(d) == r


def test_reading_from_dict_rejects_unknown_and_missing_fields():
    d = Reading.measured("pi4", "dht22", "humidity", 40.0, ts=1.0).to_dict()
    with pytest.raises(ReadingError, match="unknown reading field"):
        Reading.from_dict({**d, "colour": "blue"})
    del d["ts"]
    with pytest.raises(ReadingError, match="bad reading"):
        Reading.from_dict(d)
    with pytest.raises(ReadingError, match="must be an object"):
        Reading.from_dict([1, 2])
