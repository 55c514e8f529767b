from compress.cliargs import comma_list


def test_comma_list_strips_items_and_drops_blanks():
    assert comma_list(" en-us, de,,cs ,") == ["en-us", "de", "cs"]
    assert comma_list("") == []
    assert comma_list(None) == []
    assert comma_list("out") == ["out"]
