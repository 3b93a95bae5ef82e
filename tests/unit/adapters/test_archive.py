"""Damaged, encrypted or oddly named archives are refused with a 400 that says why."""

import io
import tarfile
import zipfile

import pytest

from adapters.archive import extract_archive
from adapters.errors import AdapterError

CONFIG = b'{"peft_type": "LORA"}'


def _zip(files, compression=zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=compression) as zf:
        for name, data in files:
            zf.writestr(name, data)
    return buf.getvalue()


def _tar(files) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, data in files:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _set_zip_field(data: bytes, local_at: int, central_at: int, value: int, mask=False) -> bytes:
    """Set a 16-bit field in the (only) local header and central directory entry."""
    out = bytearray(data)
    for signature, offset in ((b"PK\x03\x04", local_at), (b"PK\x01\x02", central_at)):
        at = out.find(signature) + offset
        old = int.from_bytes(out[at : at + 2], "little")
        out[at : at + 2] = ((old | value) if mask else value).to_bytes(2, "little")
    return bytes(out)


def _sparse_tar() -> bytes:
    """A GNU sparse member whose map claims more bytes than the archive stores: its headers
    read fine, and the archive ends while its data is copied."""
    info = tarfile.TarInfo("adapter_config.json")
    info.type, info.size = tarfile.GNUTYPE_SPARSE, 512
    header = bytearray(info.tobuf(tarfile.GNU_FORMAT))
    itn = tarfile.itn
    header[386:410] = itn(0, 12, tarfile.GNU_FORMAT) + itn(4096, 12, tarfile.GNU_FORMAT)
    header[483:495] = itn(4096, 12, tarfile.GNU_FORMAT)
    header[148:156] = b" " * 8  # the checksum is computed with its own field as spaces
    header[148:156] = b"%06o\0 " % sum(header)
    return bytes(header) + b"{" * 512


def _corrupt_bzip2_zip() -> bytes:
    data = bytearray(_zip([("adapter_config.json", bytes(range(256)) * 40)], zipfile.ZIP_BZIP2))
    data[60:90] = bytes(30)
    return bytes(data)


@pytest.mark.parametrize(
    ("archive", "match"),
    [(_sparse_tar(), "archive is corrupt: unexpected end of data"),
     (_tar([("adapter_config.json", CONFIG * 40)])[:1100], "archive is corrupt"),
     (_corrupt_bzip2_zip(), "archive is corrupt"),
     (_set_zip_field(_zip([("adapter_config.json", CONFIG)]), 6, 8, 0x1, mask=True),
      "'adapter_config.json' is encrypted"),
     (_set_zip_field(_zip([("adapter_config.json", CONFIG)]), 8, 10, 99),
      "compression method 99, which cannot be unpacked"),
     (_zip([(".", CONFIG)]), "member '.' is a file without a name"),
     (_tar([(".", CONFIG)]), "member '.' is a file without a name"),
     (_zip([("a", b"x"), ("a/adapter_config.json", CONFIG)]), "a file and a folder of the same"),
     (_zip([("a/adapter_config.json", CONFIG), ("a", b"x")]), "a file and a folder of the same"),
     (_tar([("a", b"x"), ("a/adapter_config.json", CONFIG)]), "a file and a folder of the same")],
    ids=["tar-ends-mid-copy", "tar-truncated", "zip-bad-bzip2", "zip-encrypted",
         "zip-unknown-method", "zip-dot", "tar-dot", "zip-file-then-dir", "zip-dir-then-file",
         "tar-file-then-dir"],
)  # fmt: skip
def test_bad_archives_are_client_errors(archive, match, tmp_path) -> None:
    with pytest.raises(AdapterError, match=match) as exc:
        extract_archive(archive, tmp_path, 1 << 20)
    assert exc.value.kind == "invalid"
    assert list(tmp_path.iterdir()) == []  # the half-unpacked directory is gone


def test_dot_folder_entries_are_fine(tmp_path) -> None:
    """`tar -C adapter -cf x.tar .` lists `./` as a folder: that is the archive's root."""
    root = tarfile.TarInfo(".")
    root.type = tarfile.DIRTYPE
    config = tarfile.TarInfo("./adapter_config.json")
    config.size = len(CONFIG)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        tf.addfile(root)
        tf.addfile(config, io.BytesIO(CONFIG))
    out = extract_archive(buf.getvalue(), tmp_path, 1 << 20)
    assert (out / "adapter_config.json").read_bytes() == CONFIG
