"""Data sources, cache, provenance, bad datasets and the batched augmentation."""

import tarfile

import pytest
import torch

from resnet_exp.data import cifar10
from resnet_exp.data.cifar10 import DatasetError, cifar10_provenance, load_cifar10, make_mini_subset
from resnet_exp.data.loader import TrainBatches, augment_batch, per_class_indices, prepare_splits

from .conftest import TRAIN_PER_CLASS, write_image_folder, write_image_tar


def sort_by_label(x, y):
    # The torchvision layout is shuffled, the image folder sorted: compare as multisets per class.
    keys = y * 10**9 + torch.tensor([hash(bytes(img.flatten().tolist())) % 10**9 for img in x])
    order = torch.argsort(keys)
    return x[order], y[order]


def test_tar_and_torchvision_layout_load_the_same_tensors(tiny_tar, tiny_torchvision, tmp_path):
    a = load_cifar10(tiny_tar, data_dir=tmp_path / "d1", verbose=False)
    b = load_cifar10(tiny_torchvision, data_dir=tmp_path / "d2", verbose=False)
    for split in ("train", "test"):
        xa, ya = sort_by_label(getattr(a, f"{split}_x"), getattr(a, f"{split}_y"))
        xb, yb = sort_by_label(getattr(b, f"{split}_x"), getattr(b, f"{split}_y"))
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert a.train_x.dtype == torch.uint8 and a.train_x.shape == (10 * TRAIN_PER_CLASS, 3, 32, 32)
    assert a.provenance["source"] == "image-folder-tar" and b.provenance["source"] == "torchvision"
    assert a.provenance["subset"] and not a.provenance["lossy"]
    assert len(a.provenance["sha256"]) == 64


def test_image_folder_tree_and_cache(arrays, tmp_path):
    root = write_image_folder(tmp_path / "tree", arrays)
    first = load_cifar10(root, data_dir=tmp_path / "data", verbose=False)
    caches = list((tmp_path / "data" / "cache").glob("cifar10-*.pt"))
    assert len(caches) == 1 and first.provenance["sha256"][:16] in caches[0].name
    again = load_cifar10(root, data_dir=tmp_path / "data", verbose=False)
    assert torch.equal(first.train_x, again.train_x)
    # a cache of an explicit source is never used in place of the real dataset
    with pytest.raises(DatasetError):
        load_cifar10(None, data_dir=tmp_path / "data", download=False, verbose=False)


def test_torchvision_cache_is_used_once_its_files_are_gone(tiny_torchvision, tmp_path):
    import shutil

    data_dir = tmp_path / "data"
    shutil.copytree(tiny_torchvision / "cifar-10-batches-py", data_dir / "cifar-10-batches-py")
    first = load_cifar10(None, data_dir=data_dir, download=False, verbose=False)
    shutil.rmtree(data_dir / "cifar-10-batches-py")
    cached = load_cifar10(None, data_dir=data_dir, download=False, verbose=False)
    assert cached.provenance["sha256"] == first.provenance["sha256"]
    assert torch.equal(cached.train_x, first.train_x)


def test_truncated_archives_are_errors(tiny_tar, arrays, tmp_path):
    data = tiny_tar.read_bytes()
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(DatasetError, match="corrupt or truncated"):
        load_cifar10(cut, data_dir=tmp_path / "d", verbose=False)
    # an uncompressed tar cut exactly between two members would read "cleanly"
    plain = write_image_tar(tmp_path / "plain.tar", arrays, gz=False)
    with tarfile.open(plain) as tar:
        members = tar.getmembers()
    boundary = members[len(members) // 2].offset
    cut2 = tmp_path / "cut2.tar"
    cut2.write_bytes(plain.read_bytes()[:boundary])
    with pytest.raises(DatasetError, match="truncated|unequal"):
        load_cifar10(cut2, data_dir=tmp_path / "d", verbose=False)


def test_a_dry_runs_provenance_decodes_a_source_once_per_machine(tiny_tar, arrays, tmp_path, monkeypatch):
    # A plan needs the dataset's provenance (its sha256 above all), not its pixels: the first
    # dry run decodes, the second reads the provenance kept in the user's cache; nothing is
    # written in the data folder; other bytes are decoded again.
    data_dir = tmp_path / "data"
    first = cifar10_provenance(tiny_tar, data_dir)
    assert first == load_cifar10(tiny_tar, data_dir=tmp_path / "other", verbose=False).provenance
    assert not data_dir.exists()

    def no_decoding(*a, **k):
        raise AssertionError("decoded again")

    with monkeypatch.context() as m:
        m.setattr(cifar10, "_decode", no_decoding)
        assert cifar10_provenance(tiny_tar, data_dir) == first
        other = write_image_tar(tmp_path / "other.tar", arrays, gz=False)  # the same images, other bytes
        with pytest.raises(AssertionError, match="decoded again"):
            cifar10_provenance(other, data_dir)
    assert cifar10_provenance(other, data_dir)["sha256"] != first["sha256"]
    assert not data_dir.exists()


def test_missing_dataset_says_what_was_tried(tmp_path, monkeypatch):
    monkeypatch.delenv("RESNET_EXP_DATA", raising=False)
    with pytest.raises(DatasetError) as e:
        load_cifar10(None, data_dir=tmp_path / "empty", download=False)
    msg = str(e.value)
    assert "Tried" in msg and "cifar-10-batches-py" in msg and "--data" in msg and "1." in msg and "3." in msg
    with pytest.raises(DatasetError, match="no such file"):
        load_cifar10(tmp_path / "nope.tar.gz", data_dir=tmp_path)


def test_wrong_class_folder_is_an_error(arrays, tmp_path):
    root = write_image_folder(tmp_path / "tree", arrays)
    (root / "train" / "cat").rename(root / "train" / "kitten")
    with pytest.raises(DatasetError, match="kitten"):
        load_cifar10(root, data_dir=tmp_path / "d", verbose=False)


def test_mini_subset_is_balanced_and_byte_identical(tiny_tar, tmp_path):
    out = make_mini_subset(tiny_tar, tmp_path / "mini.tar.gz", train_per_class=5, test_per_class=2)
    mini = load_cifar10(out, data_dir=tmp_path / "d", verbose=False)
    assert torch.bincount(mini.train_y).tolist() == [5] * 10
    assert torch.bincount(mini.test_y).tolist() == [2] * 10
    assert out.read_bytes() == make_mini_subset(tiny_tar, tmp_path / "again.tar.gz", 5, 2).read_bytes()


def test_per_class_subsets_and_val_split(tiny_tar, tmp_path):
    ds = load_cifar10(tiny_tar, data_dir=tmp_path, verbose=False)
    s = prepare_splits(ds, torch.device("cpu"), train_per_class=4, test_per_class=3, val_split=50)
    assert torch.bincount(s.train_y).tolist() == [4] * 10
    assert torch.bincount(s.test_y).tolist() == [3] * 10
    assert torch.bincount(s.val_y).tolist() == [5] * 10
    # mean subtraction: the training set (before subsetting away val) has per-pixel mean ~0
    full = prepare_splits(ds, torch.device("cpu"))
    assert full.train_x.mean(0).abs().max() < 1e-5
    assert len(per_class_indices(ds.test_y, first=2)) == 20


def test_augmentation_crops_and_flips_as_specified():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, 3, 32, 32)
    out = augment_batch(x, g)
    assert out.shape == x.shape
    padded = torch.nn.functional.pad(x, (4, 4, 4, 4))
    n_flipped = 0
    for i in range(len(x)):
        # every output is some 32x32 window of the zero-padded input, or of its mirror image
        found = False
        for flip in (False, True):
            src = padded[i].flip(-1) if flip else padded[i]
            for dy in range(9):
                for dx in range(9):
                    if torch.equal(out[i], src[:, dy:dy + 32, dx:dx + 32]):
                        found, n_flipped = True, n_flipped + flip
                        break
                if found:
                    break
            if found:
                break
        assert found, f"image {i} is not a crop of the padded input or of its flip"
    assert 80 < n_flipped < 176  # about half


def test_train_batches_are_epochs_and_resume_exactly():
    x, y = torch.randn(100, 3, 32, 32), torch.arange(100) % 10
    a = TrainBatches(x, y, batch_size=32, augment=True, seed=3)
    seen = torch.cat([a.next()[1] for _ in range(3)])
    assert a.batches_per_epoch == 3 and len(seen.unique()) == 10
    state = a.state_dict()
    expected = [a.next() for _ in range(4)]  # crosses an epoch boundary
    b = TrainBatches(x, y, batch_size=32, augment=True, seed=99)
    b.load_state_dict(state)
    for (xe, ye), (xb, yb) in zip(expected, (b.next() for _ in range(4))):
        assert torch.equal(xe, xb) and torch.equal(ye, yb)


def test_evaluation_does_not_depend_on_its_batch_size():
    """``evaluate``'s batch (eval_batch_size: 128 on a CPU, 1,000 on a GPU) is a speed choice:
    in eval mode BN uses its running statistics, so every image's output is its own; the
    error and loss agree across batch sizes, and the model is left in the mode it was in."""
    from resnet_exp.data.loader import eval_batch_size, evaluate
    from resnet_exp.models import build_model

    torch.manual_seed(0)
    model = build_model("resnet8").train()
    with torch.no_grad():  # running statistics that are not BN's defaults
        for _ in range(3):
            model(torch.randn(64, 3, 32, 32))
    x, y = torch.randn(300, 3, 32, 32), torch.randint(0, 10, (300,))
    results = [evaluate(model, x, y, batch_size=b) for b in (None, 7, 128, 1000)]
    assert model.training
    for loss, err in results[1:]:
        assert err.item() == results[0][1].item()
        assert loss.item() == pytest.approx(results[0][0].item(), rel=1e-5)
    assert eval_batch_size(torch.device("cpu")) == 128 and eval_batch_size(torch.device("cuda")) == 1000
