// Preact + htm bound together: `html\`<div>...</div>\`` instead of JSX, so no build step.
import { h, render } from '/vendor/preact.module.js';
import htm from '/vendor/htm.module.js';

export const html = htm.bind(h);
export { render };
export { useState, useEffect, useRef, useCallback, useMemo } from '/vendor/hooks.module.js';
