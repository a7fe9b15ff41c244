// pg's own conversion of a parameter to the text it sends (lib/utils.js has no published types).
declare module 'pg/lib/utils.js' {
  const utils: { prepareValue(value: unknown): unknown };
  export default utils;
}
