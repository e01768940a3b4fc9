"""A guard in front of libmtmd's audio decoder: refuse a clip whose header lies about its length.

``mtmd_helper_bitmap_init_from_buf`` asks miniaudio for the clip's length, allocates that many
float samples and then reads what the bytes really hold (the rest stays zero). The length comes
from the header where the format has one: an MP3's Xing/Info tag (a frame count) or a FLAC's
STREAMINFO (a sample count). A few hundred bytes that claim billions of samples make the
allocation fail inside C++, which ends the process (``std::bad_alloc`` through a C function),
and smaller lies make minutes of zero-padded "audio" out of a truncated file. So, before any
C call, :func:`check_audio_header` reads the declared length and refuses it when the bytes
could not hold it (MP3) or when it passes :data:`MAX_AUDIO_SECONDS` (FLAC, whose compression
has no useful bound per byte, and MP3). A WAV needs no check: miniaudio clamps its length to
the bytes present.
"""

from __future__ import annotations

import struct

from ..errors import ValidationError

__all__ = ["MAX_AUDIO_SECONDS", "check_audio_header"]

MAX_AUDIO_SECONDS = 3600  # one hour: 230 MB of float samples at 16 kHz before the encoder runs
# The smallest Layer III frame (MPEG-2 at 8 kbit/s and 24 kHz: 72 * 8000 / 24000 bytes); a
# truthful tag never counts more frames than the bytes hold at this size.
MIN_MP3_FRAME_BYTES = 24
MP3_SAMPLE_RATES = {3: (44100, 48000, 32000), 2: (22050, 24000, 16000), 0: (11025, 12000, 8000)}  # by version id


def check_audio_header(data: bytes) -> None:
    """Raise ValidationError when ``data`` (MP3 or FLAC bytes; WAV passes) declares more audio
    than its bytes can hold, or more than :data:`MAX_AUDIO_SECONDS`."""
    if data[:4] == b"RIFF":
        return  # WAV: miniaudio clamps the declared length to the bytes present
    body = data[_id3_size(data):]
    if body[:4] == b"fLaC":
        _check_flac(body)
    else:
        _check_mp3_tags(body)


def _check_length(kind: str, n_samples: int, sample_rate: int, bytes_limit: int | None) -> None:
    seconds = n_samples / max(sample_rate, 1)
    if bytes_limit is not None and n_samples > bytes_limit:
        raise ValidationError(f"the {kind} header declares {seconds:.0f} s of audio, more than its "
                              "bytes can hold: truncated or corrupt audio", param="data")
    if seconds > MAX_AUDIO_SECONDS:
        raise ValidationError(f"the {kind} header declares {seconds:.0f} s of audio, over the limit of "
                              f"{MAX_AUDIO_SECONDS} s per clip", param="data")


def _id3_size(data: bytes) -> int:
    """Bytes an ID3v2 tag at the start takes (its size is a 28-bit "syncsafe" integer)."""
    if data[:3] != b"ID3" or len(data) < 10:
        return 0
    size = (data[6] & 0x7F) << 21 | (data[7] & 0x7F) << 14 | (data[8] & 0x7F) << 7 | (data[9] & 0x7F)
    return 10 + size + (10 if data[5] & 0x10 else 0)  # flag 0x10: a footer follows


def _check_flac(body: bytes) -> None:
    if len(body) < 26 or body[4] & 0x7F != 0:  # STREAMINFO must be the first metadata block
        return  # miniaudio refuses it too
    packed = int.from_bytes(body[18:26], "big")  # sample rate (20 bits), channels, bits per sample, total (36)
    sample_rate, total = packed >> 44, packed & ((1 << 36) - 1)
    _check_length("FLAC", total, sample_rate, None)


def _check_mp3_tags(body: bytes) -> None:
    """Check every Xing/Info tag that sits where a Layer III frame's tag would: right after a
    frame header and its side information (miniaudio reads the first frame's)."""
    for magic in (b"Xing", b"Info"):
        at = body.find(magic)
        while at >= 0:
            _check_mp3_tag(body, at)
            at = body.find(magic, at + 1)


def _check_mp3_tag(body: bytes, at: int) -> None:
    for header_at in (at - 4 - side for side in (9, 17, 32)):
        for crc in (0, 2):
            h = header_at - crc
            if h < 0 or body[h] != 0xFF or body[h + 1] & 0xE0 != 0xE0:
                continue
            version, layer, protected = body[h + 1] >> 3 & 3, body[h + 1] >> 1 & 3, not body[h + 1] & 1
            rate_index, mono = body[h + 2] >> 2 & 3, body[h + 3] >> 6 == 3
            if layer != 1 or version == 1 or rate_index == 3 or protected != bool(crc):
                continue  # not a Layer III header, or not the one this tag belongs to
            side = (17 if mono else 32) if version == 3 else (9 if mono else 17)
            if h + 4 + crc + side != at or len(body) < at + 12 or not body[at + 7] & 1:
                continue  # the tag is elsewhere, or carries no frame count
            (n_frames,) = struct.unpack_from(">I", body, at + 8)
            per_frame = 1152 if version == 3 else 576
            sample_rate = MP3_SAMPLE_RATES[version][rate_index]
            _check_length("MP3", n_frames * per_frame, sample_rate, len(body) // MIN_MP3_FRAME_BYTES * per_frame)

