"""String helpers udev applies to what it stores (systemd's src/shared/device-nodes.c,
udev-util.c, libudev-util.c): the forms in which ID_* values, link names and the
/run/udev/links directory names are written."""

from __future__ import annotations

_ALLOWED = frozenset("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz#+-.:=@_")
_WHITESPACE = " \t\n\v\f\r"


def _utf8_len(data: bytes, i: int) -> int:
    """utf8_encoded_valid_unichar(): the length of a valid multi-byte sequence at ``i``, else 1."""
    lead = data[i]
    if lead < 0x80:
        return 1
    for length in (2, 3, 4):
        chunk = data[i:i + length]
        if len(chunk) < length:
            continue
        try:
            if len(chunk.decode("utf-8")) == 1:
                return length
        except UnicodeDecodeError:
            continue
    return 1


def allowed_for_devnode(c: str, additional: str = "") -> bool:
    """allow_listed_char_for_devnode()."""
    return c in _ALLOWED or (bool(additional) and c in additional)


def encode_devnode_name(text: str | bytes) -> str:
    """encode_devnode_name() (udev_util_encode_string): every byte outside the allowed set,
    and the backslash, becomes \\xNN; valid UTF-8 sequences are kept."""
    data = text.encode("utf-8", "surrogateescape") if isinstance(text, str) else text
    out: list[str] = []
    i = 0
    while i < len(data):
        n = _utf8_len(data, i)
        if n > 1:
            out.append(data[i:i + n].decode("utf-8"))
        else:
            c = chr(data[i])
            out.append(f"\\x{data[i]:02x}" if c == "\\" or not allowed_for_devnode(c) else c)
        i += n
    return "".join(out)


def replace_whitespace(text: str) -> str:
    """udev_replace_whitespace(): leading and trailing whitespace dropped, every inner run of
    whitespace becomes one '_'."""
    return "_".join(part for part in text.strip(_WHITESPACE).split() if part) if text.strip(_WHITESPACE) else ""


def replace_chars(text: str, allow: str = "") -> str:
    """udev_replace_chars(): allowed characters, \\x escapes and valid UTF-8 stay, whitespace
    becomes ' ' when ``allow`` has a space, anything else becomes '_'."""
    data = text.encode("utf-8", "surrogateescape")
    out: list[str] = []
    i = 0
    while i < len(data):
        c = chr(data[i])
        if allowed_for_devnode(c, allow):
            out.append(c)
            i += 1
            continue
        if c == "\\" and data[i + 1:i + 2] == b"x":
            out.append("\\x")
            i += 2
            continue
        n = _utf8_len(data, i)
        if n > 1:
            out.append(data[i:i + n].decode("utf-8"))
            i += n
            continue
        out.append(" " if c in _WHITESPACE and " " in allow else "_")
        i += 1
    return "".join(out)


def path_tag(path: str) -> str:
    """ID_PATH_TAG from ID_PATH (path_id's builtin): alphanumerics and '-' kept, every other
    run becomes one '_', none leading or trailing."""
    out: list[str] = []
    for c in path:
        if c.isascii() and (c.isalnum() or c == "-"):
            out.append(c)
        elif out and out[-1] != "_":
            out.append("_")
    while out and out[-1] == "_":
        out.pop()
    return "".join(out)


def escape_slashes(name: str) -> str:
    """The /run/udev/links directory name of a link (xescape(name, "/")): '/' and '\\' as \\xNN."""
    return "".join(f"\\x{ord(c):02x}" if c in "/\\" else c for c in name)
