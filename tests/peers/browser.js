// What every browser peer starts with: Debian's chromium driven by playwright-core,
// scripts off, certificate checks off (the server's is self-signed), and generous
// timeouts (argon2 and applies on a busy two-core machine with the debug build).
const { chromium } = require('playwright-core');

// Opens a page of a new browser at `width` px; returns { browser, context, page }.
async function open(width) {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'],
  });
  const context = await browser.newContext({
    ignoreHTTPSErrors: true,
    viewport: { width, height: 844 },
    javaScriptEnabled: false,
  });
  context.setDefaultTimeout(120000);
  context.setDefaultNavigationTimeout(120000);
  return { browser, context, page: await context.newPage() };
}

// Screenshots of the page as it is now at 390 and 1280 px into `outDir`, with its
// heading and how wide its content is at each into `report.pages[name]`: wider than the
// window would mean sideways scrolling.
function shooter(page, report, outDir) {
  return async (name) => {
    report.pages[name] = { heading: (await page.textContent('h1')).trim() };
    for (const width of [390, 1280]) {
      await page.setViewportSize({ width, height: 844 });
      report.pages[name][`width_${width}`] = await page.evaluate(
        () => document.documentElement.scrollWidth);
      await page.screenshot({ path: `${outDir}/${name}-${width}.png`, fullPage: true });
    }
    await page.setViewportSize({ width: 390, height: 844 });
  };
}

module.exports = { open, shooter };
