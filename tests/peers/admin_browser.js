// Walks the web admin in headless Chromium (Debian's, driven by playwright-core) as a
// phone-sized browser: login, every page, the route tester, the log search, a mailbox
// user's view, logout. Prints one JSON report; screenshots go to OUT_DIR.
// Usage: node admin_browser.js BASE_URL ADMIN_PASSWORD OUT_DIR
const { open } = require('./browser');

const [base, password, outDir] = process.argv.slice(2);

(async () => {
  const report = { pages: {}, steps: [] };
  const { browser, context, page } = await open(390);
  try {
    await page.goto(`${base}/admin`);
    report.steps.push(`start: ${new URL(page.url()).pathname}`);
    await page.fill('input[name=user]', 'admin');
    await page.fill('input[name=password]', 'wrong password');
    await page.click('button[type=submit]');
    report.steps.push(`wrong password: ${(await page.textContent('[role=alert]')).trim()}`);
    await page.fill('input[name=user]', 'admin');
    await page.fill('input[name=password]', password);
    await page.click('button[type=submit]');
    report.steps.push(`logged in: ${new URL(page.url()).pathname}`);
    const cookies = await context.cookies();
    const session = cookies.find((c) => c.name === 'ferrymail_session');
    report.cookie = session && { httpOnly: session.httpOnly, secure: session.secure, sameSite: session.sameSite };
    for (const [name, path] of [
      ['overview', '/admin'],
      ['aliases', '/admin/aliases'],
      ['emails', '/admin/emails'],
      ['queue', '/admin/queue'],
      ['backups', '/admin/backups'],
      ['logs', '/admin/logs'],
      ['mailboxes', '/admin/mailboxes'],
      ['plan', '/admin/plan'],
      ['domains', '/admin/domains'],
      ['certificates', '/admin/certificates'],
    ]) {
      await page.goto(`${base}${path}`);
      const heading = (await page.textContent('h1')).trim();
      // Wider than the screen would mean sideways scrolling on a phone.
      const width = await page.evaluate(() => document.documentElement.scrollWidth);
      await page.screenshot({ path: `${outDir}/${name}.png`, fullPage: true });
      report.pages[name] = { heading, width };
    }
    await page.goto(`${base}/admin/aliases`);
    await page.fill('input[name=test]', 'hello+news@example.test');
    await page.click('form.search:has(input[name=test]) button');
    report.route = (await page.textContent('#route')).trim();
    await page.goto(`${base}/admin/emails`);
    await page.fill('input[name=q]', 'alice');
    await page.selectOption('select[name=event]', 'accepted');
    await page.click('form.search button');
    report.log_rows = await page.locator('table tr').count();
    report.log_text = await page.textContent('table');
    // With scripts on, the domains page's copy buttons run under the Content Security
    // Policy: its one inline script is allowed by hash, nothing is refused.
    const scripted = await browser.newContext({ ignoreHTTPSErrors: true, storageState: await context.storageState() });
    const domains = await scripted.newPage();
    report.csp_refusals = [];
    domains.on('console', (m) => {
      if (m.text().includes('Content Security Policy')) report.csp_refusals.push(m.text());
    });
    await domains.goto(`${base}/admin/domains`);
    // The buttons come hidden; the script shows them where a clipboard exists.
    report.copy_buttons_shown = await domains.evaluate(
      () => [...document.querySelectorAll('button.copy')].filter((b) => !b.hidden).length);
    await scripted.close();
    await page.click('header button');
    report.steps.push(`logged out: ${new URL(page.url()).pathname}`);
    await page.goto(`${base}/admin`);
    report.steps.push(`after logout: ${new URL(page.url()).pathname}`);

    const user = await browser.newContext({ ignoreHTTPSErrors: true, javaScriptEnabled: false });
    const mine = await user.newPage();
    await mine.goto(`${base}/admin/login`);
    await mine.fill('input[name=user]', 'me@example.test');
    await mine.fill('input[name=password]', 'quickstart');
    await mine.click('button[type=submit]');
    report.mailbox_user = { landed: new URL(mine.url()).pathname, usage: (await mine.textContent('#usage')).trim() };
    await mine.screenshot({ path: `${outDir}/me.png`, fullPage: true });
    const admin = await mine.goto(`${base}/admin/emails`);
    report.mailbox_user.admin_status = admin.status();
  } finally {
    await browser.close();
  }
  console.log(JSON.stringify(report));
})().catch((e) => {
  console.error(e);
  process.exit(1);
});
