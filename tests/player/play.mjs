// Plays an HLS URL in hls.js inside headless Chromium, from a page of another origin, as a
// web viewer would, and prints one JSON line of what the player saw.
//
//   node play.mjs URL [--rate R] [--timeout-s S]
//
// The line: ended (the video element reached its end), duration, start (where playback
// began), decoded and dropped frames, the playlist kinds hls.js loaded in order
// (`EVENT:live`, `VOD:ended`, ...), its errors, and the fatal one if any. Exits 0 once the
// player ended or failed, 2 on a timeout, 1 if the browser could not run.
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { chromium } from "playwright-core";

const args = process.argv.slice(2);
const url = args[0];
const option = (name, fallback) => {
  const at = args.indexOf(name);
  return at >= 0 ? Number(args[at + 1]) : fallback;
};
const rate = option("--rate", 4);
const timeoutMs = option("--timeout-s", 120) * 1000;
if (!url) {
  console.error("usage: node play.mjs URL [--rate R] [--timeout-s S]");
  process.exit(1);
}
const hlsJs = readFileSync(createRequire(import.meta.url).resolve("hls.js/dist/hls.min.js"), "utf8");

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--autoplay-policy=no-user-gesture-required", "--no-sandbox"],
});
try {
  const page = await browser.newPage();
  await page.setContent("<!doctype html><body><video muted playsinline></video></body>");
  await page.addScriptTag({ content: hlsJs });
  await page.evaluate(
    ({ url, rate }) => {
      const video = document.querySelector("video");
      const seen = (window.seen = { kinds: [], errors: [], fatal: null, start: null, ended: false, supported: Hls.isSupported() });
      if (!seen.supported) return;
      const hls = new Hls();
      hls.on(Hls.Events.LEVEL_LOADED, (_, data) => {
        const kind = `${data.details.type ?? "none"}:${data.details.live ? "live" : "ended"}`;
        if (seen.kinds.at(-1) !== kind) seen.kinds.push(kind);
      });
      hls.on(Hls.Events.ERROR, (_, data) => {
        seen.errors.push(`${data.type}/${data.details}${data.fatal ? " (fatal)" : ""}`);
        if (data.fatal) seen.fatal = data.details;
      });
      hls.on(Hls.Events.MANIFEST_PARSED, () => {
        video.playbackRate = rate;
        video.play().catch((e) => (seen.fatal = `play(): ${e}`));
      });
      video.addEventListener("playing", () => {
        if (seen.start === null) seen.start = video.currentTime;
      });
      video.addEventListener("ended", () => (seen.ended = true));
      hls.loadSource(url);
      hls.attachMedia(video);
    },
    { url, rate },
  );
  const report = () =>
    page.evaluate(() => {
      const video = document.querySelector("video");
      const quality = video.getVideoPlaybackQuality();
      return {
        ...window.seen,
        duration: video.duration,
        time: video.currentTime,
        decoded_frames: quality.totalVideoFrames,
        dropped_frames: quality.droppedVideoFrames,
      };
    });
  const deadline = Date.now() + timeoutMs;
  let state = await report();
  while (!state.ended && !state.fatal && state.supported && Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 250));
    state = await report();
  }
  state.timed_out = !state.ended && !state.fatal && state.supported;
  console.log(JSON.stringify(state));
  process.exitCode = state.timed_out ? 2 : 0;
} finally {
  await browser.close();
}
