// Open the notebook block (the HTML a real kernel returned for `rt` and `status()`) in
// headless Debian chromium and report what a user would get: what the copy buttons put on
// the clipboard or select, how the block looks in a light and a dark page, screenshots.
//
//   node check_block.mjs IN.json OUT.json SHOT_DIR
//
// IN.json: {"runtime_html", "status_html"} (fragments, put into pages of our own) and/or
// {"documents": {NAME: a whole HTML page}}. OUT.json gets the observations; the assertions
// live in tests/e2e/test_notebook_browser.py (this script only looks and reports). If it
// fails half-way, Playwright's exit handler kills the browser it launched.
import { readFileSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const [inPath, outPath, shotDir] = process.argv.slice(2);
const input = JSON.parse(readFileSync(inPath, 'utf8'));
const executablePath = process.env.HC_CHROMIUM || '/usr/bin/chromium';

// Plain pages standing in for a notebook's output area: JupyterLab's light theme and VS
// Code's dark one (their colours and fonts; outputs inherit the page's text colour).
const THEMES = {
  light: 'background:#ffffff;color:#212121',
  dark: 'background:#1e1e1e;color:#cccccc',
};
const outputs = (html) =>
  `<div id="out-rt" class="output">${html.runtime_html}</div>` +
  `<div id="out-st" class="output" style="margin-top:12px">${html.status_html}</div>`;
const page = (theme, body) =>
  `<!doctype html><html><head><meta charset="utf-8"><title>handy-colab block</title></head>` +
  `<body style="margin:0;padding:16px;font-family:system-ui,sans-serif;${THEMES[theme]}">` +
  `${body}</body></html>`;
// Colab renders each output in its own iframe on another origin; sandbox="allow-scripts"
// without allow-same-origin gives an opaque origin, and no allow="clipboard-write" means
// the Clipboard API is not delegated to it.
const framed = () => {
  const inner = page('light', outputs(input)).replaceAll('&', '&amp;').replaceAll('"', '&quot;');
  return page('light', `<iframe id="colab" sandbox="allow-scripts" style="width:900px;` +
    `height:700px;border:0" srcdoc="${inner}"></iframe>`);
};

const routes = {
  '/light': () => page('light', outputs(input)),
  '/dark': () => page('dark', outputs(input)),
  '/frame': framed,
};
const server = createServer((req, res) => {
  const refused = req.url === '/refused';
  const doc = req.url.startsWith('/doc/') && (input.documents || {})[req.url.slice(5)];
  const make = doc ? () => doc : routes[refused ? '/light' : req.url];
  const headers = { 'content-type': 'text/html; charset=utf-8' };
  if (refused) headers['permissions-policy'] = 'clipboard-write=(), clipboard-read=()';
  res.writeHead(make ? 200 : 404, headers);
  res.end(make ? make() : 'not found');
});
await new Promise((ok) => server.listen(0, '127.0.0.1', ok));
const port = server.address().port;
const origin = `http://127.0.0.1:${port}`;

const browser = await chromium.launch({
  executablePath,
  headless: true,
  // insecure.test resolves here too: plain http to a name that is not localhost is not a
  // secure context, so navigator.clipboard does not exist there (as on a notebook server
  // reached over http by its LAN address).
  args: [`--host-resolver-rules=MAP insecure.test 127.0.0.1`],
});
const out = { browser: browser.version(), cases: {} };

// Click the n-th copy button of the runtime block (0: the first, the paste line) and report
// what the user gets: the button's words, the selection, whether a Clipboard API exists.
async function clickCopy(frame, n, root = '#out-rt') {
  const cmd = frame.locator(`${root} .hc-cmd`).nth(n);
  const button = cmd.locator('button.hc-copy');
  await button.click();
  await (await button.elementHandle()).evaluate((b) => new Promise((ok, fail) => {
    // writeText's promise settles a moment after the click.
    const seen = () => b.textContent !== 'copy';
    if (seen()) return ok();
    new MutationObserver(() => seen() && ok()).observe(b, { childList: true, subtree: true });
    setTimeout(() => fail(new Error(`button still says ${b.textContent}`)), 5000);
  }));
  const seen = await frame.evaluate(() => ({
    hasClipboardApi: !!(navigator.clipboard && navigator.clipboard.writeText),
    secure: window.isSecureContext,
    origin: window.origin,
    selection: window.getSelection().toString(),
  }));
  return { ...seen, code: await cmd.locator('code').textContent(),
    button: await button.textContent() };
}

// The colours of every piece of visible text in the block, and the colour around it.
function textColours(blockSelector) {
  const block = document.querySelector(blockSelector);
  const colours = new Set();
  for (const el of [block, ...block.querySelectorAll('*')]) {
    if (el.closest('summary, details:not([open]) > div')) continue;
    const own = [...el.childNodes].some((n) => n.nodeType === 3 && n.textContent.trim());
    if (own) colours.add(getComputedStyle(el).color);
  }
  return {
    pageColour: getComputedStyle(block.parentElement).color,
    textColours: [...colours],
    stateLine: block.querySelector('.hc-state').innerText,
  };
}

async function readClipboard(pg) {
  return pg.evaluate(() => navigator.clipboard.readText());
}

async function withContext(opts, fn) {
  const ctx = await browser.newContext({ viewport: { width: 1000, height: 900 }, ...opts });
  try {
    return await fn(ctx);
  } finally {
    await ctx.close();
  }
}

// The fragments: the HTML the kernel returned, in pages of our own (cases and looks).
if (input.runtime_html) {
  // (a) Clipboard permission granted: both buttons put exactly their line on the clipboard.
  out.cases.granted = await withContext({}, async (ctx) => {
    await ctx.grantPermissions(['clipboard-read', 'clipboard-write'], { origin });
    const pg = await ctx.newPage();
    await pg.goto(`${origin}/light`);
    const connect = await clickCopy(pg, 0);
    connect.clipboard = await readClipboard(pg);
    const ssh = await clickCopy(pg, 1);
    ssh.clipboard = await readClipboard(pg);
    return { connect, ssh };
  });

  // (b) Clipboard refused: the page's Permissions-Policy forbids it (as an embedding host or
  // an administrator's policy may), with the permission itself granted, so only the refusal
  // is different from (a). writeText rejects; the fallback must select the line.
  out.cases.denied = await withContext({}, async (ctx) => {
    await ctx.grantPermissions(['clipboard-read', 'clipboard-write'], { origin });
    const pg = await ctx.newPage();
    await pg.goto(`${origin}/refused`);
    return { connect: await clickCopy(pg, 0) };
  });

  // (c) No Clipboard API at all: a page that is not a secure context.
  out.cases.insecure = await withContext({}, async (ctx) => {
    const pg = await ctx.newPage();
    await pg.goto(`http://insecure.test:${port}/light`);
    return { connect: await clickCopy(pg, 0) };
  });

  // (d) Colab-like: the block inside a sandboxed iframe, the top page allowed the clipboard.
  out.cases.sandboxed = await withContext({}, async (ctx) => {
    await ctx.grantPermissions(['clipboard-read', 'clipboard-write'], { origin });
    const pg = await ctx.newPage();
    await pg.goto(`${origin}/frame`);
    const frame = await (await pg.locator('#colab').elementHandle()).contentFrame();
    await frame.waitForSelector('.hc-copy');
    const seen = await clickCopy(frame, 0);
    return { connect: seen };
  });

  // (e) No script runs at all (a notebook viewer that strips scripts and handlers): one
  // click on the line selects all of it (user-select:all), ready for Ctrl+C / Cmd+C.
  out.cases.noscript = await withContext({ javaScriptEnabled: false }, async (ctx) => {
    const pg = await ctx.newPage();
    await pg.goto(`${origin}/light`);
    const cmd = pg.locator('#out-rt .hc-cmd').first();
    // The button is dead here (its words stay), which shows that no script ran.
    await cmd.locator('button.hc-copy').click();
    const button = await cmd.locator('button.hc-copy').textContent();
    const code = cmd.locator('code');
    await code.click();
    return { connect: { code: await code.textContent(), button,
      selection: await pg.evaluate(() => window.getSelection().toString()) } };
  });

  // How it looks: screenshots of the block before any click, light and dark; the text
  // colours in the dark page (nothing may come out dark on dark).
  out.looks = await withContext({ deviceScaleFactor: 1 }, async (ctx) => {
    const pg = await ctx.newPage();
    const seen = {};
    for (const theme of ['light', 'dark']) {
      await pg.goto(`${origin}/${theme}`);
      const block = pg.locator('#out-rt .handy-colab');
      const suffix = theme === 'light' ? '' : '-dark';
      await block.screenshot({ path: join(shotDir, `notebook-block${suffix}.png`) });
      await pg.locator('#out-st .handy-colab').screenshot({
        path: join(shotDir, `notebook-status${suffix}.png`),
      });
      seen[theme] = await pg.evaluate(textColours, '#out-rt .handy-colab');
    }
    return seen;
  });
}

// (f) Whole documents: the executed notebook exported by nbconvert (JupyterLab's own
// stylesheet, light and dark). Only this server answers: the export's CDN scripts
// (require.js, MathJax) are refused, as they would be offline.
out.documents = {};
for (const name of Object.keys(input.documents || {})) {
  out.documents[name] = await withContext({}, async (ctx) => {
    await ctx.grantPermissions(['clipboard-read', 'clipboard-write'], { origin });
    const ours = (r) => r.request().url().startsWith(origin);
    await ctx.route('**/*', (r) => (ours(r) ? r.continue() : r.abort()));
    const pg = await ctx.newPage();
    await pg.goto(`${origin}/doc/${name}`);
    const root = '.handy-colab:not(.hc-status)';
    await pg.locator(root).screenshot({ path: join(shotDir, `notebook-block-${name}.png`) });
    const looks = await pg.evaluate(textColours, root);
    const connect = await clickCopy(pg, 0, root);
    connect.clipboard = await readClipboard(pg);
    return { looks, connect };
  });
}

await browser.close();
server.close();
writeFileSync(outPath, JSON.stringify(out, null, 2));
