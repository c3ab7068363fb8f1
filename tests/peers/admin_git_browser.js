// Adds an alias through the web admin's form in headless Chromium (Debian's, driven by
// playwright-core), scripts off, for a spec kept in git: the form, its plan, the
// confirmation; prints what the done page says (the commit, the branch, applied or
// proposed) as JSON.
// Usage: node admin_git_browser.js BASE_URL ADMIN_PASSWORD OUT_DIR LOCAL_PART
const { open } = require('./browser');

const [base, password, outDir, local] = process.argv.slice(2);

(async () => {
  const report = {};
  const { browser, page } = await open(1280);
  try {
    await page.goto(`${base}/admin/login`);
    await page.fill('input[name=user]', 'admin');
    await page.fill('input[name=password]', password);
    await page.click('button[type=submit]');
    await page.goto(`${base}/admin/aliases/new`);
    await page.fill('input[name=local]', local);
    await page.selectOption('select[name=domain]', 'example.test');
    await page.fill('textarea[name=forward]', `${local}@elsewhere.test`);
    await page.click('form.edit button[type=submit]');
    report.plan = (await page.textContent('#plan')).trim();
    await page.click('#confirm');
    await page.screenshot({ path: `${outDir}/git-${local}-done.png`, fullPage: true });
    report.heading = (await page.textContent('h1')).trim();
    report.done = (await page.textContent('#done')).replace(/\s+/g, ' ').trim();
    report.branch = (await page.textContent('#branch')).trim();
    for (const id of ['applied', 'proposed']) {
      if (await page.locator(`#${id}`).count()) {
        report[id] = (await page.textContent(`#${id}`)).replace(/\s+/g, ' ').trim();
      }
    }
  } finally {
    await browser.close();
  }
  console.log(JSON.stringify(report));
})().catch((e) => {
  console.error(e);
  process.exit(1);
});
