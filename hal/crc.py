"""The two CRC-8s the sensor buses use. Standard library only; tables built once at import.

- Sensirion (SHT3x, SHT4x, SCD4x): polynomial x^8 + x^5 + x^4 + 1 (0x31), initial value 0xFF,
  no reflection, no final XOR, over each 16-bit word sent MSB first. Datasheet example:
  0xBEEF -> 0x92.
- Dallas/Maxim 1-wire (DS18B20 ROM and scratchpad): the same polynomial, reflected (0x8C),
  initial value 0, LSB first. Over all nine scratchpad bytes, a good read gives 0.
"""

from __future__ import annotations

from collections.abc import Iterable


def _table(poly: int, reflected: bool) -> tuple[int, ...]:
    out = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            if reflected:
                crc = (crc >> 1) ^ poly if crc & 1 else crc >> 1
            else:
                crc = ((crc << 1) ^ poly if crc & 0x80 else crc << 1) & 0xFF
        out.append(crc)
    return tuple(out)


_SENSIRION = _table(0x31, reflected=False)
_DALLAS = _table(0x8C, reflected=True)


def sensirion_crc8(data: Iterable[int]) -> int:
    """Sensirion's CRC-8 of the bytes (one 16-bit word is two bytes, MSB first)."""
    crc = 0xFF
    for b in data:
        crc = _SENSIRION[crc ^ b]
    return crc


def dallas_crc8(data: Iterable[int]) -> int:
    """Dallas/Maxim 1-wire CRC-8 of the bytes."""
    crc = 0
    for b in data:
        crc = _DALLAS[crc ^ b]
    return crc
