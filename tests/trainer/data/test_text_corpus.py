"""The text corpus dealt across readers: together they read it in order, no document twice, and a reader
resumed from its state goes on with exactly its next document."""
import json

from trainer.data.text_corpus import TextDocuments


def test_readers_deal_the_corpus_and_resume_where_they_stopped(tmp_path):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"text": f"doc {i}"}) + "\n" for i in range(7)))
    readers = [TextDocuments([str(corpus)], reader=r, readers=3) for r in range(3)]
    read = {r: [readers[r].next() for _ in range(3)] for r in range(3)}
    assert read[0] == ["doc 0", "doc 3", "doc 6"] and read[1] == ["doc 1", "doc 4", "doc 0"]  # endless: it repeats
    assert sorted(sum(read.values(), [])) == sorted([f"doc {i}" for i in range(7)] + ["doc 0", "doc 1"])

    again = TextDocuments([str(corpus)], reader=2, readers=3)
    again.seek(readers[2].consumed, readers[2].start)
    assert again.position == readers[2].position == 2 + 3 * 3
    assert again.next() == readers[2].next() == "doc 4"  # position 11 of the endless sequence

    later = TextDocuments([str(corpus)], reader=1, readers=2)
    later.seek(0, start=11)  # a reshard: two readers go on from position 11
    assert later.next() == "doc 5" and later.position == 14
