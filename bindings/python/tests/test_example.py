"""The installed example runs and counts right."""
import os
import subprocess
import sys

EXAMPLE = os.path.join(os.path.dirname(__file__), "..", "examples", "wordcount.py")


def test_example_wordcount_counts_every_word(tmp_path):
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text("the cat and the hat\n" * 300)
    b.write_text("The end. the END! -- ...\n" * 200)
    out = subprocess.run([sys.executable, EXAMPLE, str(a), str(b)], check=True,
                         capture_output=True, text=True, timeout=120).stdout
    lines = out.splitlines()
    assert lines[0] == "%d words, 5 distinct" % (300 * 5 + 200 * 4)
    assert lines[1].split() == [str(300 * 2 + 200 * 2), "the"]
    assert lines[2].split() == ["400", "end"]
