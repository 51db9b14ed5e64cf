"""CelebA's 40 attribute names, so a request for one the served bundle lacks (``young`` on the avatars bundle) is
told that it is a CelebA attribute and where a CelebA bundle comes from, instead of only that it is unknown.

The CelebA loader (``training/data/celeba.py``) reads the names from ``list_attr_celeba.txt`` and serves them under
``served_names``; this is the one list of them the rest of the code knows.
"""

from __future__ import annotations

from collections.abc import Iterable

# as list_attr_celeba.txt spells them
CELEBA_ATTRIBUTES = (
    "5_o_Clock_Shadow",
    "Arched_Eyebrows",
    "Attractive",
    "Bags_Under_Eyes",
    "Bald",
    "Bangs",
    "Big_Lips",
    "Big_Nose",
    "Black_Hair",
    "Blond_Hair",
    "Blurry",
    "Brown_Hair",
    "Bushy_Eyebrows",
    "Chubby",
    "Double_Chin",
    "Eyeglasses",
    "Goatee",
    "Gray_Hair",
    "Heavy_Makeup",
    "High_Cheekbones",
    "Male",
    "Mouth_Slightly_Open",
    "Mustache",
    "Narrow_Eyes",
    "No_Beard",
    "Oval_Face",
    "Pale_Skin",
    "Pointy_Nose",
    "Receding_Hairline",
    "Rosy_Cheeks",
    "Sideburns",
    "Smiling",
    "Straight_Hair",
    "Wavy_Hair",
    "Wearing_Earrings",
    "Wearing_Hat",
    "Wearing_Lipstick",
    "Wearing_Necklace",
    "Wearing_Necktie",
    "Young",
)
# A request names attributes as identifiers that start with a letter (attrs=, q=; the registry admits no label set with
# other names), so the one CelebA name that starts with a digit is served under another
RENAMED = {"5_o_Clock_Shadow": "Five_o_Clock_Shadow"}


def served_names(names: Iterable[str]) -> list[str]:
    """CelebA's attribute names as a label set serves them."""
    return [RENAMED.get(n, n) for n in names]


_CANONICAL = {a.lower(): a for a in served_names(CELEBA_ATTRIBUTES)}


def celeba_hint(unknown: Iterable[str], served: Iterable[str] = ()) -> str:
    """The sentence an ``unknown_attributes`` message ends with when some unknown names are CelebA attributes that no
    ``served`` attribute covers (empty otherwise): which ones, and the recipe that trains a bundle serving all 40."""
    have = {a.lower() for a in served}
    found = [_CANONICAL[n.lower()] for n in unknown if n.lower() in _CANONICAL and n.lower() not in have]
    if not found:
        return ""
    what = f"{found[0]} is a CelebA attribute" if len(found) == 1 else f"{', '.join(found)} are CelebA attributes"
    return (
        f". {what}: a bundle trained on CelebA serves all 40 of them; build one from your CelebA download with "
        "training/recipes/celeba.sh (README, section CelebA), then run lcs serve --bundle DIR"
    )
