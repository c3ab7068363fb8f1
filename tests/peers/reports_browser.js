// Looks at the admin's report pages in headless Chromium (Debian's, through
// playwright-core): the reports received, per domain, and one report in full. Prints one
// JSON report; screenshots go to OUT_DIR.
// Usage: node reports_browser.js BASE_URL ADMIN_PASSWORD OUT_DIR
const { open } = require('./browser');

const [base, password, outDir] = process.argv.slice(2);

(async () => {
  const report = {};
  const { browser, page } = await open(1024);
  try {
    await page.goto(`${base}/admin/login`);
    await page.fill('input[name=user]', 'admin');
    await page.fill('input[name=password]', password);
    await page.click('button[type=submit]');
    await page.goto(`${base}/admin/reports`);
    report.heading = (await page.textContent('h1')).trim();
    report.domains = await page.locator('main h2').allTextContents();
    report.chart = await page.getAttribute('figure.chart svg', 'aria-label');
    report.bars = await page.locator('figure.chart svg rect').count();
    report.tables = await page.locator('table').allTextContents();
    await page.screenshot({ path: `${outDir}/reports.png`, fullPage: true });
    await page.click('main table:last-of-type a');
    report.one = (await page.textContent('main pre')).slice(0, 4000);
    await page.screenshot({ path: `${outDir}/report.png`, fullPage: true });
  } finally {
    await browser.close();
  }
  console.log(JSON.stringify(report));
})().catch((e) => {
  console.error(e);
  process.exit(1);
});
