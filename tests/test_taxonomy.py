import pytest
from conftest import TINY_EDGES, TINY_LABELS, write_dataset

from taxoclass.data.taxonomy import ROOT, Taxonomy, readable_name
from taxoclass.errors import DataError


@pytest.fixture
def tax(tmp_path):
    return Taxonomy.load(write_dataset(tmp_path / "t"))


def test_structure_of_a_dag(tax):
    a, b, c, d, e = range(5)
    assert tax.parents(a) == [ROOT] and tax.parents(c) == [a, b]
    assert tax.children(ROOT) == [a, b]
    assert tax.children(a) == [c, d]
    assert tax.siblings(c) == [d]  # other children of a, and b has no other child
    assert tax.siblings(a) == [b]  # top-level classes are siblings under the root
    assert tax.ancestors(e) == {a, b, c}
    assert tax.descendants(a) == {c, d, e}
    assert tax.levels == [0, 0, 1, 1, 2]
    assert sorted(tax.paths(e)) == [[a, c, e], [b, c, e]]
    assert tax.multi_parent == [c]
    assert tax.leaves == [d, e]
    assert tax.with_ancestors([d]) == {a, d}
    order = tax.topological_order
    assert order.index(a) < order.index(c) < order.index(e)


def test_level_is_shortest_distance(tmp_path):
    # x(0) -> y(1) -> z(2) and x -> z directly: z is level 1, not 2
    tax = Taxonomy.load(write_dataset(tmp_path / "t", labels="0\tx\n1\ty\n2\tz\n", edges="0\t1\n1\t2\n0\t2\n"))
    assert tax.levels == [0, 1, 1]


def test_edge_index_and_names(tax):
    ei = tax.edge_index()
    assert ei.shape == (2, 4)
    assert sorted(zip(ei[0].tolist(), ei[1].tolist())) == [(0, 2), (0, 3), (1, 2), (2, 4)]
    assert tax.edge_index(undirected=True).shape == (2, 8)
    assert tax.readable(4) == "e class"
    assert readable_name("grocery_gourmet_food") == "grocery gourmet food"
    assert readable_name("Skin__Care") == "skin care"


@pytest.mark.parametrize(
    "labels, edges, message, where",
    [
        (TINY_LABELS, TINY_EDGES + "4\t0\n", "cycle in the class hierarchy: a -> c -> e_class -> a", "label_hierarchy.txt:5"),
        (TINY_LABELS, "0\t0\n", "cycle in the class hierarchy: a -> a", "label_hierarchy.txt:1"),
        (TINY_LABELS, "0\t2\n0\t9\n", "edge names unknown class id '9'", "label_hierarchy.txt:2"),
        (TINY_LABELS + "2\tzz\n", TINY_EDGES, "duplicate class id '2' (first on line 3)", "labels.txt:6"),
        (TINY_LABELS + "9\tc\n", TINY_EDGES, "duplicate class name 'c' (first on line 3)", "labels.txt:6"),
        ("0\ta\n1 b\n", "", "expected 'id<TAB>name'", "labels.txt:2"),
        (b"0\ta\n1\tb\xe9\n", "", "bytes that are not UTF-8", "labels.txt:2"),
    ],
)
def test_taxonomy_errors_name_file_and_line(tmp_path, labels, edges, message, where):
    root = write_dataset(tmp_path / "t", labels=labels, edges=edges)
    with pytest.raises(DataError) as err:
        Taxonomy.load(root)
    assert message in str(err.value)
    assert where in str(err.value)
    assert "\n" not in str(err.value)


def test_missing_hierarchy_file(tmp_path):
    root = write_dataset(tmp_path / "t")
    (root / "label_hierarchy.txt").unlink()
    with pytest.raises(DataError, match="label_hierarchy.txt: file not found"):
        Taxonomy.load(root)
