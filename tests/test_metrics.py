"""ConfusionMatrix: hand-computed cases, ignore label, absent-class rule, merged groups, merge, sklearn."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fpliif.eval.metrics import ConfusionMatrix, f1_iou
from fpliif.labels import HELEN, IGNORE_INDEX

# 8 pixels, 3 classes; pixel 6 is ignored. Kept (gt, pred) pairs:
# (0,0) (0,1) (1,1) (1,1) (1,2) (2,2) (2,0)
TARGET = torch.tensor([0, 0, 1, 1, 1, 2, 255, 2])
PRED = torch.tensor([0, 1, 1, 1, 2, 2, 0, 0])
MATRIX = [[1, 1, 0], [0, 2, 1], [1, 0, 1]]


def hand_cm() -> ConfusionMatrix:
    return ConfusionMatrix(3).update(PRED, TARGET)


def test_matrix_rows_are_ground_truth_cols_prediction():
    cm = hand_cm()
    assert cm.matrix.dtype == torch.int64
    assert cm.matrix.tolist() == MATRIX
    assert cm.total == 7


def test_hand_computed_metrics():
    r = hand_cm().compute()
    # class 1: TP 2, FP 1, FN 1; class 2: TP 1, FP 1, FN 1; class 0: TP 1, FP 1, FN 1
    assert r["tp"] == [1, 2, 1] and r["fp"] == [1, 1, 1] and r["fn"] == [1, 1, 1]
    assert r["f1"] == pytest.approx([50.0, 200 * 2 / 6, 50.0])
    assert r["iou"] == pytest.approx([100 / 3, 50.0, 100 / 3])
    assert r["mean_f1"] == pytest.approx((200 * 2 / 6 + 50.0) / 2)  # background excluded
    assert r["mean_iou"] == pytest.approx((50.0 + 100 / 3) / 2)
    assert r["pixel_acc"] == pytest.approx(100 * 4 / 7)  # background included
    assert r["absent"] == []
    assert r["pixels"] == 7
    r_all = hand_cm().compute(exclude=())
    assert r_all["mean_f1"] == pytest.approx((50 + 200 * 2 / 6 + 50) / 3)


def test_ignore_label_is_skipped_whatever_the_prediction():
    cm = ConfusionMatrix(3)
    cm.update(torch.tensor([7, 1, 200]), torch.tensor([IGNORE_INDEX, 1, IGNORE_INDEX]))
    assert cm.matrix.tolist() == [[0, 0, 0], [0, 1, 0], [0, 0, 0]]
    cm = ConfusionMatrix(3, ignore_index=9)
    cm.update(torch.tensor([0, 1]), torch.tensor([9, 1]))
    assert cm.total == 1


def test_any_shape_numpy_and_small_dtypes():
    cm = ConfusionMatrix(19)
    t = np.array([[[18, 17], [3, 255]]], dtype=np.uint8)  # 18 * 19 overflows uint8: must be widened first
    p = np.array([[[18, 0], [3, 4]]], dtype=np.uint8)
    cm.update(p, t)
    assert cm.matrix[18, 18] == 1 and cm.matrix[17, 0] == 1 and cm.matrix[3, 3] == 1 and cm.total == 3


def test_absent_class_rule():
    # 4 classes: class 3 appears nowhere -> undefined, left out of the means;
    # class 2 is predicted but never in the ground truth -> F1 = 0 and counted.
    cm = ConfusionMatrix(4).update(torch.tensor([1, 1, 2, 0]), torch.tensor([1, 1, 1, 0]))
    r = cm.compute()
    assert r["absent"] == [3]
    assert r["f1"][3] is None and r["iou"][3] is None
    assert r["f1"][2] == 0.0 and r["iou"][2] == 0.0
    assert r["f1"][1] == pytest.approx(200 * 2 / 5)
    assert r["mean_f1"] == pytest.approx((80.0 + 0.0) / 2)
    assert r["mean_iou"] == pytest.approx((100 * 2 / 3 + 0.0) / 2)


def test_empty_matrix_gives_none():
    r = ConfusionMatrix(3).compute(merged={"a": (1, 2)})
    assert r["mean_f1"] is None and r["mean_iou"] is None and r["pixel_acc"] is None
    assert r["absent"] == [0, 1, 2]
    assert r["merged_f1"] == {"a": None}


def test_merged_groups_f1_over_union():
    r = hand_cm().compute(merged={"a": (1, 2), "zero": (0,)})
    # group {1,2}: TP = gt in G and pred in G = 2+1+0+1 = 4; |gt in G| = 5, |pred in G| = 5
    assert r["merged_f1"]["a"] == pytest.approx(200 * 4 / 10)
    assert r["merged_iou"]["a"] == pytest.approx(100 * 4 / 6)
    assert r["merged_f1"]["zero"] == pytest.approx(r["f1"][0])  # a one-class group is the class itself


def test_merged_helen_groups_from_label_set():
    groups = {g: tuple(HELEN.index(c) for c in members) for g, members in HELEN.merged_f1.items()}
    le, re_, lb = HELEN.index("l_eye"), HELEN.index("r_eye"), HELEN.index("l_brow")
    # left eye predicted as right eye: wrong per class, right for the merged "eyes"
    cm = ConfusionMatrix(HELEN.num_classes).update(torch.tensor([re_, re_, lb]), torch.tensor([le, le, lb]))
    r = cm.compute(merged=groups)
    assert r["f1"][le] == 0.0 and r["f1"][re_] == 0.0
    assert r["merged_f1"]["eyes"] == pytest.approx(100.0)
    assert r["merged_f1"]["brows"] == pytest.approx(100.0)
    assert r["merged_f1"]["overall"] == pytest.approx(100.0)
    assert r["merged_f1"]["mouth"] is None


def test_merge_equals_matrix_over_concatenated_data():
    g = torch.Generator().manual_seed(0)
    t = torch.randint(0, 6, (2, 50, 40), generator=g)
    t[t == 5] = IGNORE_INDEX
    p = torch.randint(0, 5, (2, 50, 40), generator=g)
    a = ConfusionMatrix(5).update(p[0], t[0])
    b = ConfusionMatrix(5).update(p[1], t[1])
    whole = ConfusionMatrix(5).update(p, t)
    assert torch.equal(a.merge(b).matrix, whole.matrix)
    # and a naive per-pixel count agrees
    naive = np.zeros((5, 5), dtype=np.int64)
    for gt, pr in zip(t.flatten().tolist(), p.flatten().tolist(), strict=True):
        if gt != IGNORE_INDEX:
            naive[gt, pr] += 1
    assert whole.matrix.numpy().tolist() == naive.tolist()


def test_reset_and_merge_checks():
    cm = hand_cm()
    assert cm.reset().total == 0
    with pytest.raises(ValueError, match="incompatible"):
        cm.merge(ConfusionMatrix(4))


@pytest.mark.parametrize(
    "pred, target, match",
    [
        (torch.zeros(3, dtype=torch.long), torch.zeros(4, dtype=torch.long), "shapes differ"),
        (torch.zeros(2, 2, dtype=torch.long), torch.zeros(4, dtype=torch.long), "shapes differ"),
        (torch.tensor([0, 1]), torch.tensor([0, 3]), r"target: label values \[3\]"),
        (torch.tensor([0, 1]), torch.tensor([-1, 0]), "target: label values"),
        (torch.tensor([0, 5]), torch.tensor([0, 1]), r"pred: label values \[5\]"),
        (torch.tensor([0.0, 1.0]), torch.tensor([0, 1]), "integer"),
    ],
)
def test_update_errors(pred, target, match):
    cm = ConfusionMatrix(3)
    with pytest.raises(ValueError, match=match):
        cm.update(pred, target)
    assert cm.total == 0  # nothing counted on error


def test_constructor_and_compute_errors():
    with pytest.raises(ValueError):
        ConfusionMatrix(0)
    with pytest.raises(ValueError, match="collides"):
        ConfusionMatrix(3, ignore_index=2)
    with pytest.raises(ValueError, match="exclude"):
        hand_cm().compute(exclude=(3,))
    with pytest.raises(ValueError, match="merged"):
        hand_cm().compute(merged={"x": (1, 7)})


def test_all_reduce_noop_without_distributed():
    cm = hand_cm()
    assert cm.all_reduce() is cm
    assert cm.matrix.tolist() == MATRIX


def test_all_reduce_single_rank_gloo(tmp_path):
    import torch.distributed as dist

    if not dist.is_available():
        pytest.skip("torch.distributed unavailable")
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        cm = hand_cm().all_reduce()
        assert cm.matrix.tolist() == MATRIX
    finally:
        dist.destroy_process_group()


def test_f1_iou_helper():
    assert f1_iou(0, 0, 0) == (None, None)
    f, i = f1_iou(3, 1, 0)
    assert f == pytest.approx(600 / 7) and i == pytest.approx(75.0)


def test_against_sklearn():
    metrics = pytest.importorskip("sklearn.metrics")
    g = torch.Generator().manual_seed(1)
    t = torch.randint(0, 7, (3, 30, 30), generator=g)
    t[t == 6] = IGNORE_INDEX
    p = (t + torch.randint(0, 3, t.shape, generator=g)) % 6  # correlated with the target
    r = ConfusionMatrix(6).update(p, t).compute(exclude=())
    keep = t != IGNORE_INDEX
    yt, yp = t[keep].numpy(), p[keep].numpy()
    f1 = metrics.f1_score(yt, yp, labels=list(range(6)), average=None) * 100
    iou = metrics.jaccard_score(yt, yp, labels=list(range(6)), average=None) * 100
    for k in range(6):
        if r["f1"][k] is None:
            continue
        assert r["f1"][k] == pytest.approx(f1[k]) and r["iou"][k] == pytest.approx(iou[k])
    assert r["pixel_acc"] == pytest.approx(100 * metrics.accuracy_score(yt, yp))
    assert not math.isnan(r["mean_f1"])
