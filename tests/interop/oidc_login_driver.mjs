// Plays the browser for `fhirsync login` in the interop tests: follows an authorization URL's
// redirects (keeping cookies) through oidc_login_provider.mjs's automatic login and consent to
// the final redirect, the one that leaves the authorization server. Test-only.
//
// usage: node oidc_login_driver.mjs URL [--deny] [--deliver]
// Prints the final redirect URL on stdout. --deliver also requests it (the loopback listener of
// `fhirsync login` receives it, as from a browser) and prints the page's status on stderr.
// --deny ends the login with access_denied at the interaction.
const [start, ...flags] = process.argv.slice(2);
const deny = flags.includes('--deny');
const deliver = flags.includes('--deliver');
const origin = new URL(start).origin;
const jar = new Map();
let url = start;
for (let hop = 0; hop < 20; hop++) {
  const headers = {};
  if (jar.size) headers.cookie = [...jar].map(([k, v]) => `${k}=${v}`).join('; ');
  const res = await fetch(url, { redirect: 'manual', headers });
  for (const c of res.headers.getSetCookie()) {
    const [pair] = c.split(';');
    const eq = pair.indexOf('=');
    jar.set(pair.slice(0, eq).trim(), pair.slice(eq + 1));
  }
  const location = res.headers.get('location');
  if (res.status < 300 || res.status >= 400 || !location) {
    console.error(`oidc_login_driver: stopped at HTTP ${res.status} for ${url}: ${await res.text()}`);
    process.exit(1);
  }
  let next = new URL(location, url);
  if (next.origin !== origin) {
    console.log(next.href);
    if (deliver) {
      const page = await fetch(next.href);
      console.error(`oidc_login_driver: delivered, HTTP ${page.status}`);
    }
    process.exit(0);
  }
  if (deny && next.pathname.startsWith('/interaction/')) next.searchParams.set('deny', '1');
  url = next.href;
}
console.error('oidc_login_driver: too many redirects');
process.exit(1);
