"""Full-text extraction (transforms/extract.py): pages written here, and real pages of the corpus.

The pages here are what article fetching meets: a real article, one whose body only a script
renders (JSON-LD `articleBody`), a consent wall, a paywall stub, an error page served with 200, a
wrong charset, a PDF, a page in Japanese. Each ends as the right text source or rejection, with the
content asserted. The corpus test runs the extractor over real pages of `trafilatura-eval` and checks
their must-contain (and must-not-contain) snippets.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from benchmarks.bench_extract import comparable, feed_fields, load_pages
from transforms.extract import (
    EXTRACTOR_VERSION,
    PageExtraction,
    Rejection,
    TextSource,
    Verification,
    extract_page,
)
from transforms.page_html import decode_html, media_type, parse_html
from transforms.page_text import DEFAULT_SETTINGS, ExtractSettings, drop_cross_links, find_lead, ngram_share
from transforms.teasers import looks_truncated, needs_full_text

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
URL = "https://news.example/2026/11/30/tram-line"

SUMMARY = (
    "The city council approved the new tram line through the old town on Monday, "
    "after three years of debate about cost, noise and the trees along the river."
)
TITLE = "Council approves the tram line through the old town"
PARAGRAPHS = (
    "Construction is to start next spring at the northern depot, the transport department said, and the "
    "first trams should run along the river within four years if the budget holds.",
    "Opponents had argued that the line would cut through the market square and cost more than buses. "
    "The council answered with a revised route that keeps the square free of tracks on market days.",
    "The chief engineer said the tracks would be laid on rubber mats to keep vibrations away from the "
    "medieval cellars, a technique tested in two other cities with similar old quarters.",
    "Residents along the river will be able to comment on the planting plan until the end of January, "
    "when the final list of trees to be moved, rather than felled, is to be published.",
)
BOILERPLATE = (
    "<nav><ul><li><a href='/'>Home</a></li><li><a href='/politics'>Politics</a></li>"
    "<li><a href='/sport'>Sport</a></li></ul></nav>"
)
FOOTER = "<footer><p>Subscribe to our newsletter for the best of the week.</p><p>© News Example</p></footer>"


def article_html(
    *, head: str = "", body_top: str = "", paragraphs: tuple[str, ...] = PARAGRAPHS, lang: str = "en-GB"
) -> str:
    text = "".join(f"<p>{p}</p>" for p in paragraphs)
    return (
        f"<!DOCTYPE html><html lang='{lang}'><head><meta charset='utf-8'><title>{TITLE}</title>{head}</head>"
        f"<body>{BOILERPLATE}<main><article><h1>{TITLE}</h1>{body_top}{text}</article></main>{FOOTER}"
        "</body></html>"
    )


def extract(
    page: bytes | str,
    *,
    content_type: str | None = "text/html; charset=utf-8",
    feed_title: str = TITLE,
    feed_summary: str = SUMMARY,
    feed_text: str | None = None,
    settings: ExtractSettings = DEFAULT_SETTINGS,
) -> PageExtraction:
    """extract_page on the page's bytes (as fetched), with the feed's title and summary."""
    return extract_page(
        page.encode() if isinstance(page, str) else page,
        content_type=content_type,
        page_url=URL,
        feed_title=feed_title,
        feed_summary=feed_summary,
        feed_text=feed_text,
        now=NOW,
        settings=settings,
    )


# --- pages that are the article -----------------------------------------------------------------


def test_an_article_page_gives_its_text_and_what_it_says_about_itself() -> None:
    head = (
        "<link rel='canonical' href='/2026/11/30/tram-line'>"
        "<meta property='article:published_time' content='2026-11-30T08:15:00+01:00'>"
        "<meta property='article:modified_time' content='2026-11-30T10:00:00+01:00'>"
        "<meta name='author' content='Jane Doe'>"
        f"<meta property='og:description' content='{SUMMARY}'>"
    )
    result = extract(article_html(head=head, body_top=f"<p class='standfirst'>{SUMMARY}</p>"))

    assert result.rejection is None and result.upgraded
    assert result.text_source is TextSource.PAGE_TRAFILATURA
    assert result.text is not None
    assert "rubber mats to keep vibrations away from the medieval cellars" in result.text
    assert "after three years of debate" in result.text
    assert "Subscribe to our newsletter" not in result.text and "Politics" not in result.text
    assert result.text.count("\n\n") >= 3  # paragraphs kept, as blank lines
    assert result.verification is Verification.SUMMARY and result.summary_share == 1.0
    meta = result.metadata
    assert (meta.declared_language, meta.declared_language_source) == ("en-GB", "page:html_lang")
    assert meta.canonical_url == "https://news.example/2026/11/30/tram-line"
    assert meta.published_at == datetime(2026, 11, 30, 7, 15, tzinfo=UTC)
    assert (meta.published_offset_minutes, meta.published_at_source) == (60, "page:meta")
    assert meta.updated_at == datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
    assert (meta.authors, meta.authors_source) == (("Jane Doe",), "page:meta")
    assert (result.extractor, result.extractor_version) == ("trafilatura", EXTRACTOR_VERSION)
    assert (result.media_type, result.charset, result.charset_source) == ("text/html", "utf-8", "utf-8")


def test_a_body_rendered_by_script_comes_from_the_json_ld_article_body() -> None:
    # The HTML has the first paragraphs; a script renders the rest from the JSON-LD.
    body = " ".join(PARAGRAPHS)
    jsonld = {
        "@context": "https://schema.org",
        "@graph": [
            {"@type": "WebSite", "name": "News Example"},
            {
                "@type": ["NewsArticle"],
                "headline": TITLE,
                "articleBody": f"<p>{SUMMARY}</p><p>{body}</p>",
                "datePublished": "2026-11-30T06:00:00Z",
                "dateModified": "2026-11-30T07:30:00-05:00",
                "author": [{"@type": "Person", "name": "Jane Doe"}, {"@type": "Person", "name": "Li Wei"}],
                "inLanguage": "en",
                "isAccessibleForFree": True,
            },
        ],
    }
    page = (
        "<html><head><title>Tram</title>"
        f"<script type='application/ld+json'>{json.dumps(jsonld)}</script></head>"
        f"<body>{BOILERPLATE}<article><h1>{TITLE}</h1><p>{SUMMARY}</p><p>{PARAGRAPHS[0]}</p>"
        f"<div id='app'>Loading the article…</div></article>{FOOTER}</body></html>"
    )
    result = extract(page)

    assert result.text_source is TextSource.PAGE_JSONLD
    assert result.text is not None and "rubber mats to keep vibrations" in result.text
    assert "<p>" not in result.text  # the articleBody's markup became text
    meta = result.metadata
    assert meta.published_at == datetime(2026, 11, 30, 6, 0, tzinfo=UTC)
    assert meta.published_at_source == "page:jsonld"
    assert meta.updated_at == datetime(2026, 11, 30, 12, 30, tzinfo=UTC)
    assert (meta.authors, meta.authors_source) == (("Jane Doe", "Li Wei"), "page:jsonld")
    assert (meta.declared_language, meta.declared_language_source) == ("en", "page:jsonld")
    assert meta.accessible_for_free is True


def test_a_summary_written_for_the_feed_is_verified_by_the_page_describing_itself_with_it() -> None:
    # The feed's summary is in the page's meta tags only, not in its text (many feeds are so).
    summary = "Why a city of cyclists is betting its future on trams, and what it means for the river trees."
    head = f"<meta property='og:description' content='{summary}'>"
    page = article_html(head=head)

    result = extract(page, feed_summary=summary)
    assert result.upgraded and result.verification is Verification.PAGE_DESCRIPTION
    assert result.summary_share is not None and result.summary_share < 0.5

    strict = extract(page, feed_summary=summary, settings=ExtractSettings(trust_page_description=False))
    assert strict.rejection is Rejection.OFF_TOPIC and strict.text is None


# --- pages that are not the article ---------------------------------------------------------------

CONSENT = (
    "<h2>We value your privacy</h2>"
    "<p>We and our 842 partners store and access information on your device, such as cookies, and process "
    "personal data, such as unique identifiers and standard information sent by a device, for personalised "
    "advertising and content, advertising and content measurement, audience research and services "
    "development. With your permission we and our partners may use precise geolocation data and "
    "identification through device scanning. You may click to consent to our and our partners' processing "
    "as described above. Alternatively you may access more detailed information and change your preferences "
    "before consenting or to refuse consenting.</p>"
    "<p>Please note that some processing of your personal data may not require your consent, but you have "
    "a right to object to such processing. Your preferences will apply to this website only. You can change "
    "your preferences or withdraw your consent at any time by returning to this site and clicking the "
    "privacy button at the bottom of the page.</p>"
    "<button>Accept all</button><button>Reject all</button><button>Manage options</button>"
)


def test_a_consent_wall_keeps_the_feed_text_and_says_why() -> None:
    page = (
        "<html><head><title>Before you continue</title></head>"
        f"<body><div class='consent'>{CONSENT}</div></body></html>"
    )
    result = extract(page)
    assert result.rejection is Rejection.OFF_TOPIC
    assert (result.text, result.text_source, result.verification) == (None, TextSource.FEED, None)
    assert result.page_words > len(SUMMARY.split())  # longer than the summary, yet not the article
    assert "3-grams" in result.reason and "does not describe itself" in result.reason


def test_a_consent_wall_on_the_article_page_with_its_meta_tags_is_still_rejected() -> None:
    # The page's meta tags describe the article, but its body is only the consent form.
    head = f"<meta property='og:description' content='{SUMMARY}'><title>{TITLE}</title>"
    page = f"<html><head>{head}</head><body><div class='consent'>{CONSENT}</div></body></html>"
    result = extract(page)
    assert result.rejection is Rejection.OFF_TOPIC and result.text is None


def test_a_paywall_stub_is_no_upgrade() -> None:
    stub = (
        f"<p>{SUMMARY}</p><div class='paywall'><p>Subscribe to continue reading. Already a subscriber? "
        "Log in.</p></div>"
    )
    jsonld = {"@context": "https://schema.org", "@type": "NewsArticle", "isAccessibleForFree": "False"}
    head = (
        f"<meta property='og:description' content='{SUMMARY}'>"
        f"<script type='application/ld+json'>{json.dumps(jsonld)}</script>"
    )
    result = extract(article_html(head=head, paragraphs=(), body_top=stub))
    assert result.rejection is Rejection.PAYWALL and result.text is None
    assert result.metadata.accessible_for_free is False
    assert "declares itself not free" in result.reason

    # Without the schema.org paywall markup the same stub is "no gain", for the same reason.
    plain = extract(
        article_html(
            head=f"<meta property='og:description' content='{SUMMARY}'>", paragraphs=(), body_top=stub
        )
    )
    assert plain.rejection is Rejection.NO_GAIN and plain.text is None
    assert "adds" in plain.reason


def test_an_error_page_served_with_200_is_shorter_than_the_feed() -> None:
    page = (
        "<html><head><title>Page not found</title></head><body>" + BOILERPLATE + "<main><h1>404</h1>"
        "<p>Sorry, this page does not exist.</p><p><a href='/'>Back to the home page</a></p></main>"
        "</body></html>"
    )
    result = extract(page)
    assert result.rejection in (Rejection.SHORTER_THAN_FEED, Rejection.EMPTY)
    assert result.text is None and result.text_source is TextSource.FEED


def test_a_page_shorter_than_the_feeds_full_text_is_no_upgrade() -> None:
    feed_text = "\n\n".join((SUMMARY, *PARAGRAPHS, *PARAGRAPHS))  # the feed already had more
    result = extract(article_html(body_top=f"<p>{SUMMARY}</p>"), feed_text=feed_text)
    assert result.rejection is Rejection.SHORTER_THAN_FEED
    assert "shorter than the feed's" in result.reason


# --- bytes: media types and charsets ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "content_type", "expected"),
    [
        (
            b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Catalog >>\nendobj\n",
            "application/pdf",
            "application/pdf",
        ),
        (b"%PDF-1.4\n1 0 obj\n", "text/html; charset=utf-8", "application/pdf"),  # a server that lies
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "text/html", "image/png"),
        (b"\xff\xd8\xff\xe0\x00\x10JFIF", None, "image/jpeg"),
        (b"Just some words, no markup at all.", "text/plain; charset=utf-8", "text/plain"),
    ],
)
def test_only_html_is_extracted(body: bytes, content_type: str | None, expected: str) -> None:
    assert media_type(content_type, body) == expected
    result = extract(body, content_type=content_type)
    assert result.rejection is Rejection.NOT_HTML and result.text is None
    assert result.media_type == expected and expected in result.reason


def test_html_without_a_content_type_is_recognised() -> None:
    assert media_type(None, b"\n  <!DOCTYPE html><html><body><p>x</p></body></html>") == "text/html"
    assert media_type("application/octet-stream", b"<html><head><title>t</title>") == "text/html"


UMLAUT_PARAGRAPHS = (
    "Die größere Straßenbahn fährt künftig über die Brücke am Fluss, sagte die Bürgermeisterin am Montag.",
    "Für die Bäume am Ufer gibt es einen neuen Plan: Sie werden versetzt, nicht gefällt, "
    "heißt es im Rathaus.",
    "Die Gegner der Linie hatten eine Bürgerbefragung verlangt; der Gemeinderat lehnte sie mit großer "
    "Mehrheit ab, versprach aber eine Anhörung im Januar über die Führung der Gleise durch die Altstadt.",
    "Der Bau soll im Frühjahr am nördlichen Depot beginnen; die ersten Züge könnten in vier Jahren fahren, "
    "wenn das Budget hält und die Prüfung der mittelalterlichen Keller keine Überraschungen bringt.",
)
UMLAUT_SUMMARY = "Die größere Straßenbahn fährt künftig über die Brücke am Fluss, sagte die Bürgermeisterin."


def umlaut_page(meta_charset: str) -> str:
    text = "".join(f"<p>{p}</p>" for p in UMLAUT_PARAGRAPHS)
    return (
        f"<html lang='de'><head><meta charset='{meta_charset}'><title>Straßenbahn</title></head>"
        f"<body><article><h1>Straßenbahn über die Brücke</h1>{text}</article></body></html>"
    )


def test_utf8_bytes_declared_as_latin1_are_read_as_utf8() -> None:
    body = umlaut_page("iso-8859-1").encode("utf-8")
    decoded = decode_html(body, "text/html; charset=ISO-8859-1")
    assert (decoded.charset, decoded.charset_source) == ("utf-8", "utf-8")
    result = extract(body, content_type="text/html; charset=ISO-8859-1", feed_summary=UMLAUT_SUMMARY)
    assert result.text is not None and "Für die Bäume am Ufer" in result.text
    assert "Ã" not in result.text


def test_windows_1252_bytes_declared_as_utf8_in_the_header_use_the_meta_charset() -> None:
    body = umlaut_page("windows-1252").encode("cp1252")
    decoded = decode_html(body, "text/html; charset=utf-8")
    assert (decoded.charset, decoded.charset_source) == ("cp1252", "meta")
    result = extract(body, content_type="text/html; charset=utf-8", feed_summary=UMLAUT_SUMMARY)
    assert result.text is not None and "heißt es im Rathaus" in result.text
    assert "\ufffd" not in result.text


def test_undeclared_legacy_bytes_are_detected() -> None:
    page = umlaut_page("").replace("<meta charset=''>", "")
    body = (
        page.replace("</article>", "".join(f"<p>{p}</p>" for p in UMLAUT_PARAGRAPHS) + "</article>")
    ).encode("cp1252")
    decoded = decode_html(body, "text/html")
    assert decoded.charset_source == "detected"
    assert "Straßenbahn fährt künftig über die Brücke" in decoded.html


def test_a_latin1_header_on_non_utf8_bytes_means_windows_1252() -> None:
    body = "<html><body><p>Smart “quotes” – and a dash</p></body></html>".encode("cp1252")
    decoded = decode_html(body, "text/html; charset=iso-8859-1")
    assert (decoded.charset, decoded.charset_source) == ("cp1252", "header")
    assert "“quotes” – and" in decoded.html


def test_bad_input_gives_an_outcome_never_an_exception() -> None:
    for body in (b"", b"   ", b"\x00\x01\x02\x03garbage\xff\xfe", b"<html></html>", b"<<<>>>"):
        result = extract(body, content_type="text/html")
        assert result.text is None and result.rejection is not None, body


# --- a language without spaces ---------------------------------------------------------------------

JA_SUMMARY = "市議会は月曜日、旧市街を通る新しい路面電車の路線を承認した。"
JA_PARAGRAPHS = (
    "工事は来年の春に北の車庫で始まる予定で、予算が守られれば四年以内に川沿いを最初の電車が走る見込みだと交通局は述べた。",
    "反対派は、路線が市場の広場を横切り、バスよりも費用がかかると主張していた。議会は市場の日には広場に線路を敷かない修正案で応えた。",
    "主任技師によると、中世の地下室に振動が伝わらないよう、線路はゴムのマットの上に敷かれる。この技術は似た旧市街を持つ二つの都市で試された。",
)


def test_a_page_in_japanese_is_verified_and_counted_by_characters() -> None:
    text = "".join(f"<p>{p}</p>" for p in (JA_SUMMARY, *JA_PARAGRAPHS))
    page = (
        "<html lang='ja'><head><meta charset='utf-8'><title>路面電車</title></head>"
        f"<body><article><h1>路面電車の新路線</h1>{text}</article></body></html>"
    )
    result = extract(page, feed_title="路面電車の新路線を承認", feed_summary=JA_SUMMARY)
    assert result.upgraded and result.verification is Verification.SUMMARY
    assert result.text is not None and "ゴムのマットの上に敷かれる" in result.text
    assert result.page_words >= sum(len(p) for p in JA_PARAGRAPHS) * 0.8  # one word per character
    assert result.metadata.declared_language == "ja"
    assert ngram_share(JA_SUMMARY, "".join(JA_PARAGRAPHS)) < 0.2  # the rule sees Japanese as words
    assert ngram_share(JA_SUMMARY, JA_SUMMARY + "".join(JA_PARAGRAPHS)) == 1.0


# --- the parts ----------------------------------------------------------------------------------------


def test_a_lead_the_extractor_drops_is_put_back_in_front_of_the_text() -> None:
    # trafilatura drops a "teaser" block as boilerplate; the feed's summary says it is the lead.
    result = extract(article_html(body_top=f"<div class='teaser'><p>{SUMMARY}</p></div>"))
    assert result.lead_added and result.text is not None
    assert result.text.startswith(SUMMARY + "\n\n")
    assert "rubber mats" in result.text and result.verification is Verification.SUMMARY


def test_the_lead_the_summary_matches_is_found_and_not_its_container() -> None:
    standfirst = f"<p class='standfirst'><strong>{SUMMARY[:40]}</strong>{SUMMARY[40:]}</p>"
    page = article_html(body_top=f"<div class='intro'>{standfirst}</div>")
    tree = parse_html(page)
    assert tree is not None
    assert find_lead(tree, SUMMARY) == SUMMARY
    assert find_lead(tree, "A summary about something else entirely, with its own words and phrases.") is None


def test_cross_links_inside_the_text_are_dropped_and_prose_is_kept() -> None:
    long_prose = "Read more: " + " ".join(["this paragraph goes on as an ordinary sentence"] * 5)
    text = "\n\n".join(
        (
            "First paragraph.",
            "Read more: Germany confronts its colonial past",
            "À lire aussi : Les trottinettes disparaissent",
            "» Czytaj też: Nowy okręt",
            long_prose,
            "Last paragraph.",
        )
    )
    assert drop_cross_links(text) == "\n\n".join(("First paragraph.", long_prose, "Last paragraph."))


@pytest.mark.parametrize(
    "text",
    [
        "The council approved the tram line on Monday after a long debate… Read more",
        "Le conseil a approuvé la ligne de tramway lundi. Lire la suite »",
        "Der Rat hat die Straßenbahn am Montag genehmigt. Weiterlesen",
        "El consejo aprobó la línea de tranvía el lunes. Leer más...",
        "Rada zatwierdziła linię tramwajową. Czytaj dalej",
        "O conselho aprovou a linha de bonde na segunda-feira [...]",
        "The council approved the tram line on Monday, after three years of…",
        "A long story. The post Council approves tram line appeared first on News Example.",
        "市議会は路面電車の路線を承認した。続きを読む",
    ],
)
def test_teasers_look_truncated(text: str) -> None:
    assert looks_truncated(text)
    assert needs_full_text(text * 20, min_words=50) == "truncated"


@pytest.mark.parametrize(
    "text",
    [
        SUMMARY,
        "Readers who read more than ten articles a month pay. That is the rule.",
        "She said: “I will read more.” Then she left for the station.",
        "",
    ],
)
def test_whole_texts_do_not_look_truncated(text: str) -> None:
    assert not looks_truncated(text)


def test_the_auto_rule_fetches_short_or_truncated_texts_only() -> None:
    full = "\n\n".join(PARAGRAPHS * 3)
    assert needs_full_text(full, min_words=100) is None
    assert needs_full_text(SUMMARY, min_words=100) == "short"
    assert needs_full_text(None, min_words=1) == "short"
    assert needs_full_text(full + " Continue reading →", min_words=100) == "truncated"
    assert needs_full_text("路" * 150, min_words=100) is None  # Japanese counts characters
    assert needs_full_text("路" * 50, min_words=100) == "short"


def test_implausible_page_dates_are_dropped() -> None:
    future = (NOW + timedelta(days=30)).isoformat()
    head = f"<meta property='article:published_time' content='{future}'>"
    result = extract(article_html(head=head, body_top=f"<p>{SUMMARY}</p>"))
    assert (result.metadata.published_at, result.metadata.published_at_source) == (None, "none")


# --- the corpus: real pages ------------------------------------------------------------------------

# Pages that show one rule each: the lead put back (netzpolitik, dziennik), the JSON-LD body (scmp),
# a windows-1250 page declared in a meta tag (rp.pl), Japanese with a BOM (nhk), cross links (dw).
CORPUS_PAGES = {
    "netzpolitik.org.abmahnungen.html": "page:trafilatura+lead",
    "Dezubekizacja – reaktywacja. Czyli daty mają znaczenie - Dziennik.pl.html": "page:trafilatura+lead",
    "scmp.com.playbook.html": "page:jsonld+lead",
    "Unijne fundusze coraz bliżej. Sejm zagłosował _za_ - Polityka - rp.pl.html": "page:trafilatura+lead",
    "nhk.or.jp.k100.html": "page:trafilatura",
    "dw.com.colonial.html": "page:trafilatura",
}


@pytest.mark.corpus
def test_real_pages_give_their_must_contain_snippets(corpus: Path) -> None:
    pages = {page.file: page for page in load_pages(corpus) if page.file in CORPUS_PAGES}
    assert set(pages) == set(CORPUS_PAGES)
    for name, expected in CORPUS_PAGES.items():
        page = pages[name]
        title, summary = feed_fields(page.body)
        result = extract_page(
            page.body,
            content_type="text/html",
            page_url=page.url,
            feed_title=title,
            feed_summary=summary,
            now=NOW,
        )
        assert result.text is not None, (name, result.reason)
        assert f"{result.text_source.value}{'+lead' if result.lead_added else ''}" == expected, name
        text = comparable(result.text)
        assert [s for s in page.must if comparable(s) not in text] == [], name
        if name == "dw.com.colonial.html":
            assert [s for s in page.must_not if comparable(s) in text] == []
        if name.endswith("rp.pl.html"):
            assert (result.charset, result.charset_source) == ("cp1250", "meta")
            assert "Sejm" in result.text and "Ã" not in result.text
        if name == "nhk.or.jp.k100.html":
            assert (result.charset_source, result.metadata.declared_language) == ("bom", "ja_JP")
            assert result.metadata.declared_language_source == "page:og_locale"
