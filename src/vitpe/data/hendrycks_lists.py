"""The 200-class subsets of ImageNet-A and ImageNet-O as indices into the sorted 1000 ImageNet wnids.

Transcribed from hendrycks/natural-adv-examples ``eval_many_models.py``. The ImageNet-A list equals
timm's ``imagenet_a_indices.txt``; the two lists share 59 indices. The evaluation derives its masks
from the dataset folders (``vitpe.data.subsets.class_index_mask``); with the 1000 ImageNet training
classes it checks that they equal these lists, so an incomplete or renamed download fails instead of
scoring the wrong logits.
"""
from __future__ import annotations

IMAGENET_A_INDICES = (
    6, 11, 13, 15, 17, 22, 23, 27, 30, 37, 39, 42, 47, 50, 57, 70, 71, 76, 79, 89, 90, 94, 96, 97,
    99, 105, 107, 108, 110, 113, 124, 125, 130, 132, 143, 144, 150, 151, 207, 234, 235, 254, 277,
    283, 287, 291, 295, 298, 301, 306, 307, 308, 309, 310, 311, 313, 314, 315, 317, 319, 323, 324,
    326, 327, 330, 334, 335, 336, 347, 361, 363, 372, 378, 386, 397, 400, 401, 402, 404, 407, 411,
    416, 417, 420, 425, 428, 430, 437, 438, 445, 456, 457, 461, 462, 470, 472, 483, 486, 488, 492,
    496, 514, 516, 528, 530, 539, 542, 543, 549, 552, 557, 561, 562, 569, 572, 573, 575, 579, 589,
    606, 607, 609, 614, 626, 627, 640, 641, 642, 643, 658, 668, 677, 682, 684, 687, 701, 704, 719,
    736, 746, 749, 752, 758, 763, 765, 768, 773, 774, 776, 779, 780, 786, 792, 797, 802, 803, 804,
    813, 815, 820, 823, 831, 833, 835, 839, 845, 847, 850, 859, 862, 870, 879, 880, 888, 890, 897,
    900, 907, 913, 924, 932, 933, 934, 937, 943, 945, 947, 951, 954, 956, 957, 959, 971, 972, 980,
    981, 984, 986, 987, 988,
)

IMAGENET_O_INDICES = (
    1, 51, 70, 79, 89, 90, 107, 109, 117, 149, 327, 328, 341, 363, 392, 397, 398, 401, 411, 416,
    418, 419, 420, 424, 434, 439, 447, 451, 455, 459, 462, 464, 465, 470, 475, 489, 491, 494, 496,
    498, 507, 512, 517, 522, 525, 530, 533, 537, 539, 540, 545, 549, 550, 551, 552, 554, 556, 558,
    559, 562, 563, 567, 574, 580, 583, 588, 589, 593, 599, 604, 606, 607, 611, 613, 621, 624, 626,
    629, 633, 635, 640, 641, 642, 643, 644, 645, 646, 648, 666, 669, 674, 677, 678, 679, 680, 684,
    686, 687, 688, 691, 694, 699, 703, 710, 712, 714, 716, 720, 722, 723, 729, 731, 736, 738, 740,
    741, 743, 747, 749, 753, 758, 761, 767, 769, 771, 772, 773, 778, 783, 784, 789, 791, 793, 794,
    795, 797, 800, 802, 804, 807, 811, 813, 815, 827, 828, 830, 833, 842, 843, 844, 845, 852, 853,
    854, 855, 857, 858, 859, 870, 877, 879, 886, 891, 897, 898, 900, 902, 906, 910, 911, 918, 920,
    929, 931, 932, 934, 935, 937, 938, 939, 941, 943, 945, 948, 949, 950, 951, 953, 954, 955, 957,
    960, 962, 963, 965, 971, 980, 987, 988, 996,
)

OFFICIAL_INDICES = {"imagenet_a": IMAGENET_A_INDICES, "imagenet_o": IMAGENET_O_INDICES}


def official_wnids(kind: str, all_wnids: list[str] | None = None) -> list[str]:
    """The wnids of subset ``kind`` ("imagenet_a" / "imagenet_o"): the sorted 1000 ImageNet wnids
    (default: timm's copy, ``ImageNetInfo``) at the official indices; the folder names of the release."""
    if all_wnids is None:
        from timm.data import ImageNetInfo

        all_wnids = list(ImageNetInfo().label_names())
    if len(all_wnids) != 1000 or list(all_wnids) != sorted(all_wnids):
        raise ValueError("expected the sorted list of the 1000 ImageNet wnids")
    return [all_wnids[i] for i in OFFICIAL_INDICES[kind]]
