import logging

from hal.availability import FailureLog


def test_availability_logs_first_failure_and_recovery_once(caplog):
    log = logging.getLogger("test.availability")
    parts = FailureLog(log, "bme680")
    with caplog.at_level(logging.DEBUG, logger="test.availability"):
        for reason in ("EIO", "EIO", "ETIMEDOUT"):
            parts.failed("BME680", reason)
        parts.failed("IAQ", "no baseline")
        assert parts.failing("BME680") == "ETIMEDOUT"
        parts.recovered("BME680")
        parts.recovered("BME680")
    levels = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert levels == [("WARNING", "bme680: BME680 unavailable: EIO"),
                      ("DEBUG", "bme680: BME680 still unavailable: ETIMEDOUT"),
                      ("WARNING", "bme680: IAQ unavailable: no baseline"),
                      ("INFO", "bme680: BME680 recovered")]
    assert parts.failing("BME680") is None and parts.failing("IAQ") == "no baseline"
