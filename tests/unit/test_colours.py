"""Class colours: the task's own, else one default per class."""

from instageo.data.quicklook import class_colours


def test_every_class_gets_a_colour_and_the_first_twenty_differ():
    colours = class_colours(11)
    assert len(colours) == 11 and len(set(colours)) == 11  # the crop recipe's 11 classes
    assert len(set(class_colours(20))) == 20 and len(class_colours(25)) == 25


def test_declared_colours_win():
    assert class_colours(2, ["#000000", "#ffffff"]) == ["#000000", "#ffffff"]
