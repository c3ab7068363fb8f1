// A mailbox owner on their own page in headless Chromium (Debian's, driven by
// playwright-core), scripts off. Phase "setup": log in, change the password, make an
// app password, set forwarding and a vacation reply, fetch the Apple profile. Phase
// "revoke": log in with the new password and revoke the app password. Screenshots at
// 390 px and 1280 px go to OUT_DIR; prints one JSON report.
// Usage: node self_service_browser.js BASE_URL PASSWORD OUT_DIR USER PHASE [NEW_PASSWORD]
const { open, shooter } = require('./browser');

const [base, password, outDir, user, phase, newPassword] = process.argv.slice(2);

(async () => {
  const report = { pages: {} };
  const { browser, page } = await open(390);
  try {
    const shoot = shooter(page, report, outDir);
    const notice = async () => (await page.textContent('#notice')).trim();
    const login = async (secret) => {
      await page.goto(`${base}/admin/login`);
      await page.fill('input[name=user]', user);
      await page.fill('input[name=password]', secret);
      await page.click('button[type=submit]');
      return new URL(page.url()).pathname;
    };

    if (phase === 'setup') {
      report.landed = await login(password);
      await shoot('me');
      report.sections = await page.$$eval('h2', (hs) => hs.map((h) => h.textContent.trim()));
      report.settings = (await page.innerText("#client-settings")).replace(/\s+/g, " ").trim();

      // A wrong current password is refused and changes nothing.
      await page.fill('#password-form input[name=current]', 'not-my-password');
      await page.fill('#password-form input[name=new]', newPassword);
      await page.fill('#password-form input[name=again]', newPassword);
      await page.click('#password-form button[type=submit]');
      report.wrong_current = await notice();

      await page.fill('#password-form input[name=current]', password);
      await page.fill('#password-form input[name=new]', newPassword);
      await page.fill('#password-form input[name=again]', newPassword);
      await page.click('#password-form button[type=submit]');
      report.password_changed = await notice();
      // The page goes on in the new session the change made.
      report.after_change = new URL(page.url()).pathname;

      await page.fill('#app-password-form input[name=name]', 'phone');
      await page.fill('#app-password-form input[name=current]', newPassword);
      await page.click('#app-password-form button[type=submit]');
      await shoot('me-app-password');
      report.app_password = (await page.textContent('#app-password')).trim();
      report.app_passwords = (await page.innerText('#app-passwords')).replace(/\s+/g, ' ').trim();

      await page.fill('#forwarding-form textarea[name=to]', 'far@elsewhere.test');
      await page.check('#forwarding-form input[name=keep]');
      await page.fill('#forwarding-form input[name=current]', newPassword);
      await page.click('#forwarding-form button[type=submit]');
      report.forwarding = await notice();

      await page.check('#vacation-form input[name=on]');
      await page.fill('#vacation-form input[name=subject]', 'Away');
      await page.fill('#vacation-form textarea[name=body]', 'Back on Monday.');
      await page.click('#vacation-form button[type=submit]');
      report.vacation = await notice();
      await shoot('me-saved');

      const profile = await page.request.get(`${base}/admin/me/apple.mobileconfig`);
      report.profile_type = profile.headers()['content-type'];
      report.profile = await profile.text();
    } else {
      report.old_password = await login(password);
      report.landed = await login(newPassword);
      await page.click('#app-passwords button[aria-label="Revoke phone"]');
      report.revoked = await notice();
      report.left = await page.$$eval('#app-passwords', (t) => t.length);
    }
  } catch (e) {
    report.error = String(e);
  } finally {
    await browser.close();
  }
  console.log(JSON.stringify(report));
})();
