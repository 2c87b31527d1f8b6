// Renders crates/ui/assets/icon.svg to the PNG icons the manifest lists (192 and 512 px), with
// the same chromium the tests use: `npm run icons` after changing the SVG.
import { readFileSync } from 'node:fs';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { launch } from './browser.js';

const assets = join(dirname(fileURLToPath(import.meta.url)), '../../crates/ui/assets');
const svg = readFileSync(join(assets, 'icon.svg'), 'utf8');
const browser = await launch();
try {
  for (const size of [192, 512]) {
    const page = await browser.newPage({ viewport: { width: size, height: size } });
    await page.setContent(`<style>html,body{margin:0;background:transparent}svg{width:${size}px;height:${size}px;display:block}</style>${svg}`);
    await page.screenshot({ path: join(assets, `icon-${size}.png`), omitBackground: true });
    await page.close();
  }
} finally {
  await browser.close();
}
