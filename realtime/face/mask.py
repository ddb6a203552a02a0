"""LatentSync's fixed mouth masks, rasterised exactly from their per-row runs (no PNG shipped).

Convention as in LatentSync: 1 = keep the reference pixel, 0 = repaint (mouth and lower face).
``mask`` is the one every current LatentSync config uses; ``mask2``/``mask3``/``mask4`` are its variants.
At 512 the mask is the 256 image Lanczos-resized as uint8, then divided by 255, exactly like
LatentSync's ``load_fixed_mask``.
"""

from __future__ import annotations

import functools

import numpy as np

MASK_SIZE = 256

# Curve C (rows 128-242) shared by mask, mask2 and mask4: (first_row, last_row, first_col, last_col).
_CURVE_C = """128-134:9-247 135:9-246 136-148:10-246 149:10-245 150-162:11-245 163:11-244 164-169:12-244
170:12-243 171:13-243 172:13-242 173:14-242 174:14-241 175:15-241 176:15-240 177:16-240 178:16-239 179:17-238
180:18-238 181:18-237 182-183:19-236 184:20-235 185-186:21-234 187:22-233 188:22-232 189:23-232 190:24-231
191:25-230 192:26-230 193:26-229 194:27-228 195:28-228 196:29-227 197:30-226 198:31-225 199:32-224 200:33-223
201:34-223 202:34-222 203:35-221 204:36-220 205:37-219 206:38-218 207:39-217 208:40-216 209:42-215 210:43-214
211:44-213 212:45-212 213:47-211 214:48-210 215:49-208 216:51-207 217:52-206 218:54-204 219:56-203 220:57-202
221:59-200 222:60-199 223:62-197 224:64-196 225:66-194 226:68-192 227:70-191 228:72-189 229:74-187 230:76-185
231:78-183 232:80-180 233:82-178 234:85-175 235:87-173 236:90-171 237:93-168 238:95-166 239:99-164 240:104-160
241:108-156 242:131-152"""

# mask3's narrower curve, rows 128-217.
_CURVE_3 = """128-136:39-217 137-143:40-216 144-148:41-215 149-152:42-214 153-155:43-213 156-158:44-212
159-161:45-211 162-163:46-210 164-165:47-209 166-167:48-208 168-169:49-207 170-171:50-206 172-173:51-205
174:52-204 175-176:53-203 177-178:54-202 179:55-201 180-181:56-200 182:57-199 183:58-198 184-185:59-197
186:60-196 187:61-195 188:62-194 189:63-193 190:64-192 191:65-191 192:66-190 193:67-189 194:68-188 195:69-187
196:70-186 197:72-184 198:73-183 199:74-182 200:76-180 201:77-179 202:78-178 203:80-176 204:82-174 205:83-173
206:85-171 207:86-169 208:88-167 209:90-165 210:93-163 211:95-161 212:97-158 213:100-155 214:104-152
215:108-148 216:113-143 217:120-136"""

# Extra zero runs above the curve, per mask (rows 95-127 leave the nose strip 78-177 untouched in `mask`).
_UPPER = {
    "mask": "95-127:9-77 95-127:178-246",
    "mask2": "",
    "mask3": "",
    "mask4": "60-127:9-246",
}
_CURVE = {"mask": _CURVE_C, "mask2": _CURVE_C, "mask3": _CURVE_3, "mask4": _CURVE_C}

MASK_NAMES = tuple(_UPPER)


def _parse_runs(text: str) -> list[tuple[int, int, int, int]]:
    runs = []
    for item in text.split():
        rows, cols = item.split(":")
        r0, _, r1 = rows.partition("-")
        c0, c1 = cols.split("-")
        runs.append((int(r0), int(r1 or r0), int(c0), int(c1)))
    return runs


def repaint_indicator(name: str = "mask") -> np.ndarray:
    """(256, 256) uint8, 1 where LatentSync's mask is 0 (the region the renderer repaints)."""
    if name not in _UPPER:
        raise ValueError(f"unknown mask {name!r}; choose one of {MASK_NAMES}")
    ind = np.zeros((MASK_SIZE, MASK_SIZE), np.uint8)
    for r0, r1, c0, c1 in _parse_runs(_UPPER[name]) + _parse_runs(_CURVE[name]):
        ind[r0 : r1 + 1, c0 : c1 + 1] = 1
    return ind


def mask_image(name: str = "mask") -> np.ndarray:
    """The mask PNG's pixels: (256, 256, 3) uint8 with values 0 (repaint) and 255 (keep)."""
    keep = (1 - repaint_indicator(name)) * 255
    return np.repeat(keep[:, :, None], 3, axis=2).astype(np.uint8)


@functools.lru_cache(maxsize=8)
def _fixed_mask_cached(resolution: int, name: str) -> np.ndarray:
    import cv2  # OpenCV is heavy: the face package imports cheaply

    img = mask_image(name)
    if resolution != MASK_SIZE:
        img = cv2.resize(img, (resolution, resolution), interpolation=cv2.INTER_LANCZOS4)
    out = img[:, :, 0].astype(np.float64) / 255.0
    out.setflags(write=False)
    return out


def fixed_mask(resolution: int = 256, name: str = "mask") -> np.ndarray:
    """(R, R) float64 in [0, 1], 1 = keep: LatentSync's ``load_fixed_mask`` (one channel) at R."""
    return _fixed_mask_cached(int(resolution), name)
