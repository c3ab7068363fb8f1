// Edits the spec through the web admin in headless Chromium (Debian's, driven by
// playwright-core), scripts off: add a domain, then an alias with a mailbox, each by
// its form, its plan page and its confirmation. Screenshots of each new page at 390 px
// and 1280 px go to OUT_DIR; prints one JSON report.
// Usage: node admin_edit_browser.js BASE_URL ADMIN_PASSWORD OUT_DIR
const { open, shooter } = require('./browser');

const [base, password, outDir] = process.argv.slice(2);

(async () => {
  const report = { steps: [], pages: {} };
  const { browser, page } = await open(390);
  try {
    const shoot = shooter(page, report, outDir);
    await page.goto(`${base}/admin/login`);
    await page.fill('input[name=user]', 'admin');
    await page.fill('input[name=password]', password);
    await page.click('button[type=submit]');

    await page.goto(`${base}/admin/domains`);
    await page.click('text=Add a domain');
    await shoot('domain-new');
    await page.fill('input[name=name]', 'new.test');
    await page.click('form.edit button[type=submit]');
    await shoot('domain-plan');
    report.domain_plan = (await page.textContent('#plan')).trim();
    report.domain_diff = (await page.textContent('#diff')).trim();
    await page.click('#confirm');
    await shoot('domain-done');
    report.steps.push(`domain: ${(await page.textContent('h1')).trim()}`);
    report.domain_applied = (await page.textContent('#applied')).trim();
    // Onboarding: the done page leads to the new domain's records.
    await page.click('#next a');
    report.records_at = new URL(page.url()).hash;
    report.records_heading = (await page.textContent('h2#domain-new\\.test')).trim();

    await page.goto(`${base}/admin/aliases`);
    await page.click('text=Add an alias');
    await shoot('alias-new');
    await page.fill('input[name=local]', 'sales');
    await page.selectOption('select[name=domain]', 'new.test');
    await page.fill('textarea[name=forward]', 'boss@elsewhere.test');
    await page.check('input[name=mailbox]');
    await page.fill('input[name=quota]', '1GB');
    await page.click('form.edit button[type=submit]');
    await shoot('alias-plan');
    report.alias_plan = (await page.textContent('#plan')).trim();
    await page.click('#confirm');
    await shoot('alias-done');
    report.steps.push(`alias: ${(await page.textContent('h1')).trim()}`);
    report.password = (await page.textContent('#new-password')).trim();

    await page.goto(`${base}/admin/aliases/sales@new.test/edit`);
    await shoot('alias-edit');
    await page.goto(`${base}/admin/domains/new.test/edit`);
    await shoot('domain-edit');
    await page.goto(`${base}/`);
    report.front_page = new URL(page.url()).pathname;
    await shoot('overview');
    report.charts = await page.locator('#charts svg').count();
    report.chart_label = await page.getAttribute('#charts svg >> nth=0', 'aria-label');
  } finally {
    await browser.close();
  }
  console.log(JSON.stringify(report));
})().catch((e) => {
  console.error(e);
  process.exit(1);
});
