/** Calendar arithmetic on 'YYYY-MM-DD' strings, in Quebec's time zone for "today". */

// Building an Intl.DateTimeFormat costs about a millisecond; pages ask for today several times per request.
const dayFormats = new Map<string, Intl.DateTimeFormat>();

export function today(now: Date, timeZone = 'America/Toronto'): string {
  let f = dayFormats.get(timeZone);
  if (!f) dayFormats.set(timeZone, (f = new Intl.DateTimeFormat('en-CA', { timeZone, year: 'numeric', month: '2-digit', day: '2-digit' })));
  return f.format(now);
}

export function addMonths(date: string, months: number): string {
  const [y, m, d] = date.split('-').map(Number) as [number, number, number];
  const total = y * 12 + (m - 1) + months;
  const ny = Math.floor(total / 12);
  const nm = (total % 12) + 1;
  const last = new Date(Date.UTC(ny, nm, 0)).getUTCDate();
  return `${String(ny).padStart(4, '0')}-${String(nm).padStart(2, '0')}-${String(Math.min(d, last)).padStart(2, '0')}`;
}

/** Whole months from a to b (b ≥ a), as a person counts a child's age. */
export function monthsBetween(a: string, b: string): number {
  const [ay, am, ad] = a.split('-').map(Number) as [number, number, number];
  const [by, bm, bd] = b.split('-').map(Number) as [number, number, number];
  let months = (by - ay) * 12 + (bm - am);
  if (bd < ad) months -= 1;
  return months;
}

export function addDays(date: string, days: number): string {
  const t = Date.parse(`${date}T00:00:00Z`) + days * 86_400_000;
  return new Date(t).toISOString().slice(0, 10);
}

/** Easter Sunday of a Gregorian year (the anonymous Gregorian algorithm, "Meeus/Jones/Butcher"). */
export function easterSunday(year: number): string {
  const a = year % 19;
  const b = Math.floor(year / 100);
  const c = year % 100;
  const d = Math.floor(b / 4);
  const e = b % 4;
  const f = Math.floor((b + 8) / 25);
  const g = Math.floor((b - f + 1) / 3);
  const h = (19 * a + b - d - g + 15) % 30;
  const i = Math.floor(c / 4);
  const k = c % 4;
  const l = (32 + 2 * e + 2 * i - h - k) % 7;
  const m = Math.floor((a + 11 * h + 22 * l) / 451);
  const month = Math.floor((h + l - 7 * m + 114) / 31);
  const day = ((h + l - 7 * m + 114) % 31) + 1;
  return `${String(year).padStart(4, '0')}-${String(month).padStart(2, '0')}-${String(day).padStart(2, '0')}`;
}

/** ISO weekday of a date: 1 = Monday … 7 = Sunday. */
export function isoWeekday(date: string): number {
  return ((new Date(`${date}T00:00:00Z`).getUTCDay() + 6) % 7) + 1;
}

/** The n-th given weekday (1 = Monday) of a month. */
function nthWeekday(year: number, month: number, weekday: number, n: number): string {
  const first = `${year}-${String(month).padStart(2, '0')}-01`;
  return addDays(first, ((weekday - isoWeekday(first) + 7) % 7) + (n - 1) * 7);
}

const holidayYears = new Map<number, ReadonlySet<string>>();

/**
 * Quebec's statutory holidays of a year (Loi sur les normes du travail, art. 60, and the Loi sur la fête
 * nationale): 1 January, Good Friday and Easter Monday (the law lets an employer choose one; both are counted, so
 * that a parent never loses a day to the facility's choice), the Monday before 25 May (Journée nationale des
 * patriotes), 24 June, 1 July, Labour Day (first Monday of September), Thanksgiving (second Monday of October),
 * 25 December. When 24 June or 1 July falls on a Sunday, the next day is the holiday.
 */
export function quebecHolidays(year: number): ReadonlySet<string> {
  let s = holidayYears.get(year);
  if (s) return s;
  const y = String(year).padStart(4, '0');
  const easter = easterSunday(year);
  const shifted = (date: string) => (isoWeekday(date) === 7 ? addDays(date, 1) : date);
  s = new Set([
    `${y}-01-01`,
    addDays(easter, -2),
    addDays(easter, 1),
    addDays(`${y}-05-25`, -(((isoWeekday(`${y}-05-25`) + 5) % 7) + 1)),
    shifted(`${y}-06-24`),
    shifted(`${y}-07-01`),
    nthWeekday(year, 9, 1, 1),
    nthWeekday(year, 10, 1, 2),
    `${y}-12-25`,
  ]);
  holidayYears.set(year, s);
  return s;
}
