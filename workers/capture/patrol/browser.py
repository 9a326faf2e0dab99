"""What the patrol does in the page: cookies, the age gate or cookie wall, the listing's "next"
page and the detail pages it links to (links wrapping a thumbnail)."""
from __future__ import annotations

from urllib.parse import urlsplit


def browser_cookies(driver, url: str) -> str:
    try:
        got = driver.execute_cdp_cmd("Network.getCookies", {"urls": [url]}).get("cookies", [])
    except Exception:
        return ""
    return "; ".join(f"{c['name']}={c['value']}" for c in got)


def set_cookies(driver, urls, cookie: str):
    for pair in [p.strip() for p in (cookie or "").split(";") if "=" in p]:
        name, value = pair.split("=", 1)
        for u in {f"{urlsplit(x).scheme}://{urlsplit(x).netloc}/" for x in urls}:
            try:
                driver.execute_cdp_cmd("Network.setCookie", {"name": name, "value": value, "url": u, "path": "/"})
            except Exception:
                pass


def user_agent(driver) -> str:
    try:
        return driver.execute_cdp_cmd("Browser.getVersion", {}).get("userAgent", "") or "Mozilla/5.0"
    except Exception:
        return "Mozilla/5.0"


# --- in the page: gates and the "next" link ---------------------------------------------------

GATE_JS = r"""
const sel = arguments[0];
const visible = (el) => { const r = el.getBoundingClientRect(); const st = getComputedStyle(el);
  return r.width > 0 && r.height > 0 && st.visibility !== 'hidden' && st.display !== 'none'; };
let target = null, how = null;
if (sel) { try { target = document.querySelector(sel); } catch (e) {} how = 'selector'; }
if (!target) {
  const box = /age|gate|verif|adult|consent|cookie|gdpr|disclaimer|年齢|同意|成人/i;
  const yes = /18|enter|agree|accept|allow|yes|continue|ok\b|はい|入場|入る|同意|了承|承諾|許可|進む|閲覧/i;
  const no = /leave|exit|\bno\b|reject|decline|under|未満|いいえ|退出|拒否/i;
  for (const el of document.querySelectorAll('button, a, input[type=button], input[type=submit], [role=button]')) {
    const text = (el.innerText || el.value || el.getAttribute('aria-label') || '').trim().slice(0, 80);
    if (!text || no.test(text) || !yes.test(text) || !visible(el)) continue;
    let p = el, inBox = false;
    for (let i = 0; p && p.getAttribute && i < 6; i++, p = p.parentElement) {
      const name = (p.id || '') + ' ' + (typeof p.className === 'string' ? p.className : '') + ' ' + (p.getAttribute('aria-label') || '');
      if (box.test(name)) { inBox = true; break; }
    }
    if (inBox) { target = el; how = 'common'; break; }
  }
}
if (!target) return null;
target.click();
return how + ':' + (target.id ? '#' + target.id : target.tagName.toLowerCase());
"""

NEXT_JS = r"""
const sel = arguments[0];
let el = null;
if (sel) { try { el = document.querySelector(sel); } catch (e) {} }
if (!el) el = document.querySelector('a[rel~="next" i], link[rel~="next" i]');
const href = el ? (el.href || el.getAttribute('href')) : null;
// A listing's detail pages: links that wrap a thumbnail (an image, a video, a picture).
const details = [];
for (const a of document.querySelectorAll('a[href]')) {
  if (!a.querySelector('img, video, picture')) continue;
  if (typeof a.href === 'string' && !details.includes(a.href)) details.push(a.href);
  if (details.length >= 100) break;
}
return {next: (typeof href === 'string') ? href : null, details: details};
"""


def gate_clicker(selector: str):
    def run(driver):
        return driver.execute_script(GATE_JS, selector or None)
    return run


def listing_links(selector: str):
    def run(driver):
        return driver.execute_script(NEXT_JS, selector or None)
    return run
