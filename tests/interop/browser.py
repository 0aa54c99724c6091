"""A small headless "browser" for the interoperability suite: follows redirects by hand, keeps
cookies, submits the bridge's consent form and the identity provider's login form, and stops at the
client's redirect URI, returning what the authorization server sent there. Standard library only.
"""

import http.cookiejar
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from html.parser import HTMLParser

MAX_STEPS = 20


class BrowserError(Exception):
    pass


class _TextOf(HTMLParser):
    """A page's visible words: no tags, no style, no script."""

    def __init__(self):
        super().__init__()
        self.words, self._hidden = [], 0

    def handle_starttag(self, tag, attrs):
        self._hidden += tag in ("style", "script", "head")

    def handle_endtag(self, tag):
        self._hidden -= tag in ("style", "script", "head")

    def handle_data(self, data):
        if not self._hidden and data.strip():
            self.words.append(data.strip())


def visible_text(body: str) -> str:
    """What a person reads on an error page, for the message of the error raised."""
    parser = _TextOf()
    parser.feed(body)
    return " ".join(parser.words)


@dataclass
class Form:
    attrs: dict
    inputs: list = field(default_factory=list)  # (name, value, type)
    buttons: list = field(default_factory=list)  # (name, value)


class PageParser(HTMLParser):
    def __init__(self):
        super().__init__()
        self.forms: list[Form] = []
        self.links: dict[str, str] = {}  # id -> href

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "form":
            self.forms.append(Form(attrs))
        elif tag == "input" and self.forms:
            self.forms[-1].inputs.append((attrs.get("name"), attrs.get("value", ""), attrs.get("type", "text")))
        elif tag == "button" and self.forms and attrs.get("name"):
            self.forms[-1].buttons.append((attrs["name"], attrs.get("value", "")))
        elif tag == "a" and attrs.get("id"):
            self.links[attrs["id"]] = attrs.get("href", "")


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


@dataclass
class Outcome:
    """Where the authorization server finally sent the user agent, and what it saw on the way."""

    params: dict
    pages: list

    def get(self, name):
        return self.params.get(name)


class Browser:
    def __init__(self, username: str, password: str, consent: str = "allow", upstream: str = "login"):
        """`consent` is the button pressed on the bridge's consent page (allow/deny); `upstream` is
        what the user does on the identity provider's login form (login/cancel)."""
        self.username = username
        self.password = password
        self.consent = consent
        self.upstream = upstream
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()), _NoRedirect()
        )

    def _fetch(self, url: str, form: dict | None):
        data = urllib.parse.urlencode(form).encode() if form is not None else None
        request = urllib.request.Request(url, data=data, method="POST" if form is not None else "GET")
        try:
            with self.opener.open(request, timeout=20) as response:
                return response.status, response.headers, response.read().decode("utf-8", "replace")
        except urllib.error.HTTPError as error:
            return error.code, error.headers, error.read().decode("utf-8", "replace")

    def authorize(self, authorization_url: str, redirect_uri: str) -> Outcome:
        url, form, pages = authorization_url, None, []
        for _ in range(MAX_STEPS):
            status, headers, body = self._fetch(url, form)
            if status in (301, 302, 303, 307, 308):
                target = urllib.parse.urljoin(url, headers["Location"])
                if target.split("?")[0] == redirect_uri.split("?")[0]:
                    query = urllib.parse.urlsplit(target).query
                    params = {k: v[0] for k, v in urllib.parse.parse_qs(query).items()}
                    return Outcome(params, pages)
                url, form = target, None
                continue
            if status != 200:
                raise BrowserError(f"{status} at {url.split('?')[0]}: {visible_text(body)[:500]}")
            page = PageParser()
            page.feed(body)
            url, form = self._answer(url, page, pages, body)
        raise BrowserError(f"more than {MAX_STEPS} steps without reaching {redirect_uri}")

    def _answer(self, url: str, page: PageParser, pages: list, body: str):
        consent = next((f for f in page.forms if any(n == "decision" for n, _ in f.buttons)), None)
        if consent is not None:
            pages.append("bridge-consent")
            fields = {name: value for name, value, kind in consent.inputs if name and kind == "hidden"}
            fields["decision"] = self.consent
            return urllib.parse.urljoin(url, consent.attrs.get("action", url)), fields
        login = next((f for f in page.forms if f.attrs.get("id") == "kc-form-login"), None)
        if login is not None:
            if "login-error" in body:
                raise BrowserError("the identity provider refused the username or password")
            pages.append("idp-login")
            if self.upstream == "cancel":
                return urllib.parse.urljoin(url, page.links["cancel"]), None
            fields = {"username": self.username, "password": self.password, "login": "login"}
            return urllib.parse.urljoin(url, login.attrs["action"]), fields
        raise BrowserError(f"unexpected page at {url.split('?')[0]}: {body[:500]}")
