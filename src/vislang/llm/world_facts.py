"""What is true of each shape and colour of the built-in world, in words (for the world backend).

The shape facts follow the masks ``vislang.data.world`` draws: a circle of unit radius; a square
of side 1.6 resting on a side; a triangle pointing up from a flat base; a diamond (``|u| + |v| <= 1``,
a square on its corner); a cross of two bars 0.6 wide; a star of five points joined by curved
edges, one point up. Every shape is turned by at most about 11 degrees and drawn on a dark,
noisy background. The colour facts follow the RGB values of ``COLORS``. A shape's sentences name
no colour and a colour's sentences name no shape, and every sentence names its own class before
any other, so a prompt built from them is still recognised as being about that class.

In the sentences ``{A}`` is the noun phrase with a capital article (``A circle``, ``An orange
circle``) and ``{a}`` the same in lower case.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ClassFacts:
    concepts: tuple[str, ...]  # short visual concepts (LaBo's bottleneck)
    describe: tuple[str, ...]  # what it looks like (CuPL)
    fine_grained: tuple[str, ...]  # how it differs from the classes most like it (GIST)
    gist: str  # the phrase a one-caption summary keeps


SHAPE_FACTS: dict[str, ClassFacts] = {
    "circle": ClassFacts(
        concepts=(
            "round outline",
            "no corners",
            "no straight sides",
            "one curved edge",
            "as wide as tall",
            "smooth edge",
        ),
        describe=(
            "{A} is a round, flat shape with no corners and no straight sides.",
            "{A} has one smooth, curved edge that is the same distance from its centre all the way round.",
            "{A} looks the same however it is turned: it is as wide as it is tall.",
            "{A} is a filled disc with a smooth outline and no points.",
            "{A} appears as a round patch of colour on a dark, slightly noisy background.",
            "You can identify {a} by its round outline: there is no corner or straight edge anywhere.",
        ),
        fine_grained=(
            "{A} has a curved outline everywhere, unlike a square or a diamond, whose outlines are straight sides.",
            "{A} has no points at all, unlike a star, whose outline rises into five points.",
            "{A} fills a round area with no gaps, unlike a cross, whose four arms leave its corners empty.",
        ),
        gist="a round shape with no corners",
    ),
    "square": ClassFacts(
        concepts=(
            "four corners",
            "four straight sides",
            "right angles",
            "equal sides",
            "flat top and bottom",
            "rests on a side",
        ),
        describe=(
            "{A} is a flat shape with four straight sides of equal length and four corners.",
            "{A} has four right-angled corners and sits on one of its sides.",
            "{A} has a flat top edge, a flat bottom edge and two upright sides.",
            "{A} is as wide as it is tall, with straight edges that meet at right angles.",
            "{A} appears as a block of colour, upright or turned only slightly, on a dark background.",
            "You can identify {a} by its four equal sides and its square corners.",
        ),
        fine_grained=(
            "{A} rests on a flat side, unlike a diamond, which is the same figure standing on a corner.",
            "{A} has four corners, one more than a triangle, and all four of its angles are right angles.",
            "{A} has straight sides all round, unlike a circle, whose outline is curved.",
        ),
        gist="four equal straight sides and four square corners",
    ),
    "triangle": ClassFacts(
        concepts=(
            "three corners",
            "three straight sides",
            "pointed top",
            "flat base",
            "wider at the bottom",
            "points upwards",
        ),
        describe=(
            "{A} is a flat shape with three straight sides and three corners.",
            "{A} points upwards: it has a single corner at the top and a flat base at the bottom.",
            "{A} gets wider from its top corner down to its flat bottom edge.",
            "{A} has two slanted sides of equal length that meet at a point above a level base.",
            "{A} appears as a wedge of colour pointing up on a dark background.",
            "You can identify {a} by its three corners and its flat base.",
        ),
        fine_grained=(
            "{A} has three corners, one fewer than a square or a diamond.",
            "{A} has a flat base and a single point at the top, unlike a diamond, which also has a point below.",
            "{A} has straight, slanted sides, unlike a star, whose five points are joined by curved edges.",
        ),
        gist="three straight sides, pointing up from a flat base",
    ),
    "diamond": ClassFacts(
        concepts=(
            "four corners",
            "four slanted sides",
            "stands on a corner",
            "pointed top and bottom",
            "pointed left and right",
            "widest in the middle",
        ),
        describe=(
            "{A} is a square turned onto its corner, with four straight, slanted sides.",
            "{A} has four corners: one pointing up, one down, one left and one right.",
            "{A} is widest across its middle and narrows to a point at the top and at the bottom.",
            "{A} stands on a corner and has no level or upright edge.",
            "{A} appears as a rhombus of colour standing on its tip on a dark background.",
            "You can identify {a} by its four slanted sides and its pointed top and bottom.",
        ),
        fine_grained=(
            "{A} stands on a corner, unlike a square, which is the same figure resting on a flat side.",
            "{A} has a point at the bottom as well as at the top, unlike a triangle, which has a flat base.",
            "{A} has four straight sides and four points, unlike a star, whose five points are joined by curves.",
        ),
        gist="a square standing on one corner, with four slanted sides",
    ),
    "cross": ClassFacts(
        concepts=("two crossing bars", "four arms", "plus sign", "twelve corners", "straight sides", "empty corners"),
        describe=(
            "{A} is a plus sign: two straight bars of equal length crossing at right angles in the middle.",
            "{A} has four arms of equal length pointing up, down, left and right.",
            "{A} has twelve corners, four of them tucked in where the arms meet.",
            "{A} is made of straight edges only, with narrow arms and empty space between them.",
            "{A} appears as a plus-shaped mark of colour on a dark background.",
            "You can identify {a} by its four narrow arms meeting in the middle.",
        ),
        fine_grained=(
            "{A} has four narrow arms with straight sides, unlike a star, whose points taper and are curved.",
            "{A} leaves its corners empty, unlike a square, which is filled out to its corners.",
            "{A} has arms pointing up, down, left and right where a diamond has corners instead.",
        ),
        gist="two straight bars crossing in the middle like a plus sign",
    ),
    "star": ClassFacts(
        concepts=(
            "five points",
            "one point facing up",
            "curved edges between points",
            "no straight sides",
            "tapering tips",
            "small solid middle",
        ),
        describe=(
            "{A} is a shape with five points spread evenly around its centre.",
            "{A} has one point facing straight up and four more points around it.",
            "{A} has curved edges that dip in between its points and no straight sides.",
            "{A} has narrow, tapering tips around a small solid middle.",
            "{A} appears as a five-pointed burst of colour on a dark background.",
            "You can identify {a} by its five tapering points.",
        ),
        fine_grained=(
            "{A} has five points, unlike a cross, which has four arms with straight sides.",
            "{A} has an outline that curves in and out, unlike a circle, whose outline is round and even.",
            "{A} has more points than a diamond or a triangle, and the edges between its points are curved.",
        ),
        gist="five points joined by curved edges",
    ),
}


@dataclass(frozen=True)
class ColorWords:
    shade: str  # "a strong, warm red"
    like: str  # something of that colour
    light: str  # how the colour is mixed from red, green and blue light
    near: str  # the world colour most like it
    difference: str  # how it differs from ``near``
    tone: str  # warm, cool or neutral


COLOR_WORDS: dict[str, ColorWords] = {
    "red": ColorWords(
        "a strong, warm red",
        "a ripe tomato",
        "mostly red light with little green or blue",
        "orange",
        "it has less yellow in it",
        "warm",
    ),
    "green": ColorWords(
        "a fresh, grassy green",
        "a leaf in spring",
        "mostly green light with little red or blue",
        "cyan",
        "it has less blue in it",
        "cool",
    ),
    "blue": ColorWords(
        "a deep, vivid blue",
        "a clear evening sky",
        "mostly blue light with a little green and red",
        "purple",
        "it has less red in it",
        "cool",
    ),
    "yellow": ColorWords(
        "a bright lemon yellow",
        "a lemon",
        "red and green light together with very little blue",
        "orange",
        "it is lighter and less red",
        "warm",
    ),
    "purple": ColorWords(
        "a rich violet purple",
        "a plum",
        "red and blue light with little green",
        "blue",
        "it has more red in it",
        "cool",
    ),
    "orange": ColorWords(
        "a bright, warm orange",
        "an orange fruit",
        "much red, some green and little blue light",
        "red",
        "it has more yellow in it",
        "warm",
    ),
    "white": ColorWords(
        "a clean, almost pure white",
        "fresh snow",
        "equal, high amounts of red, green and blue light",
        "yellow",
        "it has no tint of any hue",
        "neutral",
    ),
    "cyan": ColorWords(
        "a bright turquoise cyan",
        "tropical sea water",
        "green and blue light with little red",
        "blue",
        "it is lighter and greener",
        "cool",
    ),
}


def color_facts(name: str) -> ClassFacts:
    """The facts of colour ``name`` in the shape facts' form."""
    w = COLOR_WORDS[name]
    return ClassFacts(
        concepts=(
            f"{name} colour",
            f"{w.tone} hue" if w.tone != "neutral" else "no hue",
            f"like {w.like}",
            "bright against a dark background",
            "even colour all over",
        ),
        describe=(
            f"{{A}} is {w.shade}, like {w.like}.",
            f"{{A}} is coloured {name} all over, with only slight variations in shade.",
            f"{{A}} stands out as {name} against a dark, slightly noisy background.",
            f"You can identify {{a}} by its colour: {w.light}.",
        ),
        fine_grained=(
            f"{{A}} is {name}, not {w.near}: {w.difference}.",
            f"{{A}} is {w.shade}; its colour, made of {w.light}, sets it apart from {w.near} objects.",
        ),
        gist=w.shade,
    )
