// interop/browser_login.mjs: a person logging in, played by a real headless browser (Debian's
// chromium driven by puppeteer-core, pinned in package-lock.json; no browser download). It waits
// for the authorization URL that `fhirsync login` writes (FHIRSYNC_LOGIN_URL_FILE), opens it,
// signs in on the sandbox's login page, answers the consent page (allow, or deny), and follows the
// redirect to fhirsync's loopback listener, whose page it checks. A screenshot of each page goes
// to the artifacts folder. Test-only peer, never shipped.
//
// usage: node browser_login.mjs --url-file FILE --shots DIR [--user U] [--password P]
//                               [--patient ID] [--deny] [--wrong-password] [--expect-error]
//                               [--timeout SECONDS]
// --expect-error: the authorization URL must answer an error page (no login form); prints
// {"status": N, "error": ..., "description": ...}.
// Prints one JSON line: {"landed": URL, "title": ..., "page": text of the last page}; exit 0 when
// every step it was asked to do happened, 1 otherwise (the message says which step).
import fs from 'node:fs';
import path from 'node:path';
import puppeteer from 'puppeteer-core';

const args = process.argv.slice(2);
const opt = { user: 'clinician', password: 'sandbox-login', patient: null, deny: false,
              wrongPassword: false, expectError: false, timeout: 60, urlFile: null, shots: null };
for (let i = 0; i < args.length; i++) {
  const a = args[i];
  if (a === '--url-file') opt.urlFile = args[++i];
  else if (a === '--shots') opt.shots = args[++i];
  else if (a === '--user') opt.user = args[++i];
  else if (a === '--password') opt.password = args[++i];
  else if (a === '--patient') opt.patient = args[++i];
  else if (a === '--deny') opt.deny = true;
  else if (a === '--wrong-password') opt.wrongPassword = true;
  else if (a === '--expect-error') opt.expectError = true;
  else if (a === '--timeout') opt.timeout = Number(args[++i]);
  else { console.error(`browser_login: unknown argument ${a}`); process.exit(2); }
}
if (!opt.urlFile || !opt.shots) {
  console.error('browser_login: --url-file and --shots are required');
  process.exit(2);
}
const executablePath = process.env.CHROMIUM || '/usr/bin/chromium';
const deadline = Date.now() + opt.timeout * 1000;
fs.mkdirSync(opt.shots, { recursive: true });

function fail(step, detail) {
  console.error(`browser_login: ${step}: ${detail}`);
  process.exitCode = 1;
  throw new Error(step);
}

async function waitForUrl() {
  while (Date.now() < deadline) {
    try {
      const text = fs.readFileSync(opt.urlFile, 'utf8').trim();
      if (text) return text;
    } catch { /* not written yet */ }
    await new Promise((r) => setTimeout(r, 100));
  }
  fail('authorization URL', `${opt.urlFile} was not written in ${opt.timeout} s`);
}

let browser;
let shot = 0;
async function snap(page, name) {
  shot += 1;
  await page.screenshot({ path: path.join(opt.shots, `${String(shot).padStart(2, '0')}-${name}.png`),
                          fullPage: true });
}

try {
  const url = await waitForUrl();
  browser = await puppeteer.launch({
    executablePath, headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--no-first-run'],
  });
  const page = await browser.newPage();
  page.setDefaultTimeout(Math.max(1000, deadline - Date.now()));
  const first = await page.goto(url, { waitUntil: 'load' });
  if (opt.expectError) {
    await snap(page, 'error');
    if (await page.$('form#login-form')) fail('error page', 'a login form was served');
    const text = async (sel) => page.$eval(sel, (e) => e.textContent).catch(() => null);
    console.log(JSON.stringify({ status: first.status(), landed: page.url(),
                                 error: await text('#error'),
                                 description: await text('#error_description') }));
    process.exit(0);
  }
  if (!(await page.$('form#login-form'))) fail('login page', `no form#login-form at ${page.url()}`);
  await snap(page, 'login');
  if (opt.wrongPassword) {
    await page.type('#username', opt.user);
    await page.type('#password', `${opt.password}-wrong`);
    await Promise.all([page.waitForNavigation({ waitUntil: 'load' }), page.click('#login')]);
    const err = await page.$eval('#error', (e) => e.textContent).catch(() => '');
    if (!/wrong/i.test(err)) fail('wrong password', `no error shown (got "${err}")`);
    await snap(page, 'wrong-password');
  }
  await page.$eval('#username', (e) => { e.value = ''; });
  await page.type('#username', opt.user);
  await page.type('#password', opt.password);
  await Promise.all([page.waitForNavigation({ waitUntil: 'load' }), page.click('#login')]);
  if (!(await page.$('form#consent-form'))) {
    const text = await page.evaluate(() => document.body.innerText);
    fail('consent page', `not shown after login: ${text.slice(0, 200)}`);
  }
  if (opt.patient) {
    if (!(await page.$('select#patient'))) fail('patient picker', 'no select#patient');
    await page.select('select#patient', opt.patient);
  }
  await snap(page, 'consent');
  // The redirect lands on fhirsync's loopback listener, which answers one page and closes.
  await Promise.all([
    page.waitForNavigation({ waitUntil: 'load' }),
    page.click(opt.deny ? '#deny' : '#allow'),
  ]);
  await snap(page, opt.deny ? 'denied' : 'done');
  const landed = page.url();
  const title = await page.title();
  const text = await page.evaluate(() => document.body.innerText);
  console.log(JSON.stringify({ landed, title, page: text }));
} catch (e) {
  if (!process.exitCode) {
    console.error(`browser_login: ${e.message}`);
    process.exitCode = 1;
  }
} finally {
  if (browser) await browser.close();
}
