"""stride's shards are WebDataset shards: webdataset reads what stride writes and stride reads what
webdataset writes, though stride's reader is its own (datamodules/tar_samples.py); and the reader
refuses what webdataset would silently skip."""

import io
import tarfile

import pytest
import webdataset

from stride.datamodules.manifest import read_manifest
from stride.datamodules.streaming import iter_shard
from stride.datamodules.tar_samples import split_member_name, tar_samples
from stride.errors import StrideError


def test_webdataset_reads_the_shards_stride_writes(digits_shards):
    manifest = read_manifest(digits_shards)
    for shard in manifest.split("val").shards:
        path = digits_shards / shard.name
        ours = [(key, members) for key, members in iter_shard(path, ("png", "cls"))]
        theirs = [(sample["__key__"], {"png": sample["png"], "cls": sample["cls"]})
                  for sample in webdataset.WebDataset(str(path), shardshuffle=False, empty_check=False)]
        assert len(ours) == shard.num_samples and ours == theirs


def test_stride_reads_the_shards_webdataset_writes(tmp_path):
    path = tmp_path / "theirs-000000.tar"
    samples = [{"__key__": f"images/{i:04d}", "png": bytes([i, 1, 2]), "cls": str(i % 3).encode()} for i in range(5)]
    with webdataset.TarWriter(str(path)) as writer:
        for sample in samples:
            writer.write(sample)
    with open(path, "rb") as handle:
        read = list(tar_samples(handle, str(path)))
    assert read == [(s["__key__"], {"png": s["png"], "cls": s["cls"]}) for s in samples]


@pytest.mark.parametrize("name, expected", [("000017.png", ("000017", "png")), ("a/b/k.seg.PNG", ("a/b/k", "seg.png")),
                                            ("dir.v2/k.cls", ("dir.v2/k", "cls")), ("noext", None), (".png", None)])
def test_member_names_split_into_key_and_field_as_webdataset_does(name, expected):
    assert split_member_name(name) == expected


def _tar(members: list[tarfile.TarInfo]) -> io.BytesIO:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for info in members:
            tar.addfile(info, io.BytesIO(b"x" * info.size) if info.isreg() else None)
    buffer.seek(0)
    return buffer


def _file(name: str, size: int = 1) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    return info


def _link(name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
    return info


@pytest.mark.parametrize("members, message", [
    ([_file("a.png"), _link("a.cls")], "'a.cls' is not a regular file"),
    ([_file("a.png"), _file("../a.cls")], "'../a.cls' is not a plain relative name"),
    ([_file("/abs/a.png")], "'/abs/a.png' is not a plain relative name"),
    ([_file("a.png"), _file("README")], "'README' has no extension"),
    ([_file("a.png"), _file("a.PNG")], "sample 'a' has two members for field .png"),
])
def test_a_shard_member_webdataset_would_skip_refuses_the_shard(members, message):
    with pytest.raises(StrideError, match=f"shard evil.tar: .*{message}"):
        list(tar_samples(_tar(members), "evil.tar"))


def test_a_truncated_shard_names_the_last_good_sample(digits_shards, tmp_path):
    shard = read_manifest(digits_shards).split("val").shards[0]
    data = (digits_shards / shard.name).read_bytes()
    cut = tmp_path / "cut.tar"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(StrideError, match=r"shard .*cut.tar is corrupted or truncated after sample '\w+'"):
        list(iter_shard(cut, ("png", "cls")))


def test_a_shard_cut_between_members_is_not_taken_for_a_shorter_shard():
    """tarfile ends quietly at a missing or garbled header; the samples behind it must not vanish unnoticed."""
    whole = _tar([_file("a.png", 600), _file("a.cls"), _file("b.png", 600), _file("b.cls")]).getvalue()
    second_sample = 512 + 1024 + 512 + 512  # a.png header and data, a.cls header and data
    assert [k for k, _ in tar_samples(io.BytesIO(whole), "whole.tar")] == ["a", "b"]
    for broken in (whole[:second_sample], whole[:second_sample + 100],
                   whole[:second_sample] + b"garbage!" * 64 + whole[second_sample + 512:]):
        with pytest.raises(tarfile.ReadError, match="no end-of-archive block at byte 2560"):
            list(tar_samples(io.BytesIO(broken), "cut.tar"))


def test_a_gzip_compressed_shard_is_named_as_such(digits_shards, tmp_path):
    import gzip

    shard = read_manifest(digits_shards).split("val").shards[0]
    packed = tmp_path / "packed.tar"
    packed.write_bytes(gzip.compress((digits_shards / shard.name).read_bytes()))
    with pytest.raises(StrideError, match="packed.tar is gzip-compressed; stride's shards are plain tar files"):
        list(iter_shard(packed, ("png", "cls")))
