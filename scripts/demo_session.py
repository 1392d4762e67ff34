"""Helpers of scripts/schemathesis.sh, standard library only.

wait BASE           waits until BASE/readyz answers 200 (at most 60 s)
session BASE USER   signs USER in at the demo's mock identity provider, as a
                    browser would, and prints "<session cookie>:<CSRF token>"
seed BASE MOCK SESSION ADMIN
                    gives alice a Git user token and acme-prod a Git Runtime
                    token (personal access tokens made at the mock GitHub),
                    so that the fuzzing also reaches the answers with tokens
"""
import html.parser
import http.cookiejar
import json
import sys
import time
import urllib.parse
import urllib.request


def wait(base):
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(base + "/readyz", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            sys.exit("demo_session.py: the broker did not become ready within 60 s")
        time.sleep(0.1)


class Inputs(html.parser.HTMLParser):
    """The hidden inputs of the first form, and any `csrf` field."""

    def __init__(self):
        super().__init__()
        self.fields, self.forms = {}, 0

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "form":
            self.forms += 1
        elif tag == "input" and self.forms <= 1 and a.get("type") == "hidden":
            self.fields[a.get("name")] = a.get("value", "")


def session(base, user):
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    with opener.open(base + "/login") as page:  # redirected to the mock IdP
        idp_url, body = page.url, page.read().decode()
    form = Inputs()
    form.feed(body)
    data = dict(form.fields, username=user)
    action = urllib.parse.urljoin(idp_url, "authorize")
    # the IdP redirects to the broker's callback, which sets the session
    with opener.open(action, urllib.parse.urlencode(data).encode()) as page:
        tokens = page.read().decode()
    page_fields = Inputs()
    page_fields.feed(tokens)
    csrf = page_fields.fields.get("csrf")
    cookie = next((c.value for c in jar if c.name == "gitbroker_session"), None)
    if not (csrf and cookie):
        sys.exit("demo_session.py: signing in did not give a session and a CSRF token")
    print(f"{cookie}:{csrf}")


def call(method, url, body, headers):
    req = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        method=method,
        headers={"content-type": "application/json", **headers},
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read() or b"null")


def seed(base, mock, sess, admin):
    def pat(owner, scopes):
        made = call("POST", mock + "/__mock/pats",
                    {"flavour": "github", "owner": owner, "kind": "classic", "scopes": scopes}, {})
        return made["token"]

    cookie, csrf = sess.split(":", 1)
    call("PUT", base + "/api/v1/me/runtimes/acme-prod/token", {"token": pat("alice", ["repo"])},
         {"cookie": f"gitbroker_session={cookie}", "x-csrf-token": csrf})
    call("PUT", base + "/api/v1/admin/runtimes/acme-prod/git-token",
         {"token": pat("dave", ["repo", "admin:repo_hook"])}, {"authorization": f"Bearer {admin}"})


if __name__ == "__main__":
    {
        "wait": lambda: wait(sys.argv[2]),
        "session": lambda: session(sys.argv[2], sys.argv[3]),
        "seed": lambda: seed(*sys.argv[2:6]),
    }[sys.argv[1]]()
